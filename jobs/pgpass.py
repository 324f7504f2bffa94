"""A database password from a mounted Secret file, handed to libpq as a private passfile.

In a pod the password is a read-only file of the instance's Secret (components/kube_specs.py password_file), never
an environment variable of the pod spec: the step reads it once and writes a libpq passfile (mode 0600) in a
private directory of its memory-backed volume, then points `PGPASSFILE` at it for this process (psycopg reads it
at connect) and for the child processes (pg_dump, pg_receivewal inherit it). Only the passfile's path is ever in
an environment: never the password, which also never reaches argv or a log line (errors name the file only).

On a workstation nothing changes: without `--password-file`, libpq uses PGPASSWORD or PGPASSFILE as before.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

# What the CLI flags say in their help (pgsets_cli, pgsnap_cli).
PASSWORD_FILE_HELP = (
    "a file holding the database password (a mounted Secret key); the job writes it into a private libpq "
    "passfile (--passfile-dir) for itself and pg_dump. Default: PGPASSWORD / PGPASSFILE from the environment"
)
PASSFILE_DIR_HELP = "where the private passfile goes (a memory-backed volume in the pods; default: the temp dir)"


class PasswordFileError(ValueError):
    """The mounted password cannot be used; the message names the file, never its content."""


def escape(password: str) -> str:
    """A passfile field: libpq reads '\\' and ':' escaped by a backslash."""
    return password.replace("\\", "\\\\").replace(":", "\\:")


def read_password(path: Path) -> str:
    """The password in `path`: the whole file, without one trailing newline (`echo pw > file` adds one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PasswordFileError(f"--password-file {path}: no such file (is the Secret mounted?)") from None
    except PermissionError:
        raise PasswordFileError(
            f"--password-file {path}: not readable by uid {os.getuid()} (the pod's fsGroup gives the job's group "
            f"read on a Secret volume)"
        ) from None
    except UnicodeDecodeError:
        raise PasswordFileError(f"--password-file {path}: not UTF-8 text") from None
    except OSError as error:
        raise PasswordFileError(f"--password-file {path}: cannot be read ({error.strerror})") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise PasswordFileError(f"--password-file {path}: is empty; it must hold the password")
    if "\n" in password or "\r" in password:
        # A passfile line cannot hold a line break, and libpq would take only the first line anyway.
        raise PasswordFileError(f"--password-file {path}: holds more than one line; it must hold the password alone")
    return password


def install(path: Path, directory: Path | None = None, environ: MutableMapping[str, str] = os.environ) -> Path:
    """Write the password of `path` into a new passfile (0600) in a private directory under `directory` and make
    libpq use it: `PGPASSFILE` set, `PGPASSWORD` removed (it would win over the file). The file is removed when
    the process exits. Returns the passfile's path."""
    password = read_password(path)
    base = directory or Path(tempfile.gettempdir())
    try:
        private = Path(tempfile.mkdtemp(prefix="pgpass-", dir=base))  # 0700
    except OSError as error:
        raise PasswordFileError(f"--passfile-dir {base}: cannot create the passfile there ({error.strerror})") from None
    passfile = private / "pgpass"
    # O_EXCL and the mode at creation: the file is never readable by anyone else, not even for a moment.
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"*:*:*:*:{escape(password)}\n")
    atexit.register(_remove, passfile)
    environ.pop("PGPASSWORD", None)
    environ["PGPASSFILE"] = str(passfile)
    return passfile


def _remove(passfile: Path) -> None:
    with contextlib.suppress(OSError):
        passfile.unlink()
        passfile.parent.rmdir()


def install_from_args(args) -> Path | None:
    """`install` for a command whose parser has `--password-file` / `--passfile-dir`; None without the flag."""
    path = getattr(args, "password_file", None)
    if path is None:
        return None
    return install(path, getattr(args, "passfile_dir", None))


def add_arguments(parser) -> None:
    parser.add_argument("--password-file", type=Path, default=None, metavar="PATH", help=PASSWORD_FILE_HELP)
    parser.add_argument("--passfile-dir", type=Path, default=None, metavar="DIR", help=PASSFILE_DIR_HELP)
