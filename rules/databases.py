"""Which databases of a server a backup must account for: every one is either backed up or explicitly ignored.

Splice creates its per-component databases at start-up, and a synchronizer upgrade adds new ones (e.g.
`sequencer_5` beside `sequencer_4`). A database on the server that the stack does not list is never dumped, while
the run keeps succeeding; so a run lists the server's databases first and refuses when one is unaccounted for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rules.manifest import role_key

# The database names the stack config and the job's flags accept: plain, unquoted PostgreSQL identifiers.
PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")

# Databases a server has that are nobody's data: never backed up, never reported.
# - postgres: the maintenance database every cluster is created with (initdb); Splice does not use it.
# - cloudsqladmin: Cloud SQL's own (the service's health checks and maintenance; not connectable to users).
# - rdsadmin: RDS's own (the service's management; not connectable to users).
# Templates and databases that refuse connections are left out by the listing itself (datistemplate,
# datallowconn), not by name.
SYSTEM_DATABASES = frozenset({"postgres", "cloudsqladmin", "rdsadmin"})


def unlisted_databases(present: Iterable[str], configured: Iterable[str], ignored: Iterable[str]) -> list[str]:
    """The databases on the server that are neither configured for it, nor ignored, nor a system database; sorted."""
    accounted = set(configured) | set(ignored) | SYSTEM_DATABASES
    return sorted(set(present) - accounted)


def unlisted_message(server: str, roles: list[str], unlisted: list[str]) -> str:
    """The error a run fails with: the server and its roles, the databases, and the two ways to resolve it."""
    # The config key to edit: the role's own, or one of the roles sharing the server.
    keys = [role_key(role) for role in roles]
    role = keys[0] if len(keys) == 1 else "<" + "|".join(keys) + ">"
    return (
        f"server {server} (role {', '.join(roles)}) has databases the stack neither backs up nor ignores: "
        f"{', '.join(unlisted)}; add each to sv-backups:postgres.{role}.databases to back it up (e.g. the new "
        f"database after a synchronizer upgrade), or to sv-backups:postgres.{role}.ignoreDatabases if it holds "
        "nothing to keep"
    )
