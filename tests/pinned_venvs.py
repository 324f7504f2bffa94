"""Python tools the tests run that are too big, or pull too many dependencies, for the project's virtualenv:
each is installed from a pinned requirements file (tests/pinned/<name>.txt, its whole dependency closure) into a
venv of its own under the temp directory, once per machine and requirements file, as tests/pinned_tools.py caches
binaries. The project's virtualenv is never touched. An environment variable naming a Python that already has the
tool is used instead (e.g. on a platform the pinned hashes do not cover)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PINNED = Path(__file__).resolve().parent / "pinned"


@dataclass(frozen=True)
class PinnedVenv:
    name: str  # tests/pinned/<name>.txt
    override: str  # environment variable naming a python to use instead
    timeout: int = 900  # seconds for the install (checkov is ~100 packages)

    def python(self) -> Path:
        if os.environ.get(self.override):
            return Path(os.environ[self.override])
        requirements = PINNED / f"{self.name}.txt"
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
        venv = Path(tempfile.gettempdir()) / "sv-backups-tools" / f"{self.name}-{digest}"
        python = venv / "bin" / "python"
        if (venv / "complete").exists():
            return python
        # Built aside and renamed into place: a concurrent or interrupted run never sees a half-installed venv.
        partial = venv.with_name(f"{venv.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True, capture_output=True, timeout=120)
        done = subprocess.run(
            [str(partial / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--no-input", "-r", str(requirements)],
            capture_output=True, text=True, timeout=self.timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise AssertionError(
                f"could not install {requirements.name} (or set {self.override}=/path/to/python):\n"
                f"{done.stderr[-3000:]}"
            )
        (partial / "complete").write_text(digest)
        try:
            partial.rename(venv)
        except OSError:  # another run finished first: use its venv
            shutil.rmtree(partial, ignore_errors=True)
        # The venv's scripts name the partial path in their shebang; callers run `python -m <tool>`.
        return python


CEL_PYTHON = PinnedVenv("cel-python", override="CEL_PYTHON", timeout=300)
CHECKOV = PinnedVenv("checkov", override="CHECKOV_PYTHON")
