"""The checks restore-set runs after a restore, on the restored databases themselves.

The restore already fails on a digest mismatch, a pg_restore error or a missing relation (jobs/restore.py). These
checks compare contents with what the set recorded at dump time, with the drill's own code (jobs/drill.py):
- every database of the set is there (the restore restored each one or failed);
- each table's exact row count and sampled checksum against the manifest's verification data, where recorded
  (sets older than that record are reported `unverified`, not failed);
- the apps-before-participant rule read back from the restored data (no app store ingested beyond the
  participant's ledger end), where the restored schemas are Splice's.
"""

from __future__ import annotations

from typing import Any

from jobs.drill import FAILED, DatabaseResult, ordering_from_data, verify_database
from jobs.pgdump import connect
from rules.manifest import APPS, PARTICIPANT


def check_restored(manifest: dict[str, Any], restored: list[dict[str, Any]]) -> tuple[list[DatabaseResult], dict]:
    """`restored`: restore_set's results (role, database, target DSN without password; the password comes from
    PGPASSWORD/PGPASSFILE as for the restore). Returns each database's result and the ordering read from data."""
    records = {(db["role"], db["database"]): db for db in manifest["databases"]}
    results = []
    for item in restored:
        result = DatabaseResult(item["role"], item["database"])
        with connect(item["target"], autocommit=True) as conn:
            verify_database(conn, records[(item["role"], item["database"])], result)
        results.append(result)
    by_role = {
        role: [(f"{item['role']}/{item['database']}", item["target"]) for item in restored if item["role"] == role]
        for role in (APPS, PARTICIPANT)
    }
    ordering = (
        ordering_from_data(by_role[APPS], by_role[PARTICIPANT])
        if by_role[APPS] and by_role[PARTICIPANT]
        else {"checked": False, "detail": "the restore did not include both apps and participant"}
    )
    return results, ordering


def any_failed(results: list[DatabaseResult], ordering: dict[str, Any]) -> bool:
    return any(r.status == FAILED for r in results) or (ordering.get("checked") and not ordering.get("holds"))


def summary_lines(results: list[DatabaseResult], ordering: dict[str, Any]) -> list[str]:
    lines = []
    for r in results:
        what = f"{r.tables} tables, {r.rows} rows as recorded, {r.samples_checked} samples match"
        lines.append(f"check {r.label}: {r.status}: {what}" + "".join(f"; {p}" for p in r.problems))
    if ordering.get("checked"):
        verdict = "holds" if ordering.get("holds") else "BROKEN: " + "; ".join(ordering.get("problems") or [])
        lines.append(f"check apps before participant (from the data): {verdict}")
    else:
        lines.append(f"check apps before participant (from the data): not checked: {ordering.get('detail')}")
    return lines
