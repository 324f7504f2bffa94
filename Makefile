# Two entry points for a fresh machine (see README):
#   make plan   offline plan of the dev stack (no cloud account, no Pulumi CLI)
#   make test   everything the tests need, then every test
# and `make new-stack` (README "Your first stack"): a stack of your own and its DR stack, from a few questions
# (or flags: make new-stack ARGS="--cloud gcp --stack sv-1 ...", see scripts/new_stack.py --help).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= dev
PYTEST_ARGS ?=
ARGS ?=

.PHONY: plan plan-all new-stack test test-fast lint bench system-deps clean

# The program's own dependencies (what `pulumi up` needs) plus the policy pack's (the offline plan runs the
# pack), and the full test set, are separate stamps, so `make plan` does not pull the test servers.
# --no-compile halves the install time of the provider SDKs.
$(VENV)/.program-deps: requirements.txt policy/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --disable-pip-version-check -r requirements.txt -r policy/requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements.txt requirements-jobs.txt requirements-dev.txt policy/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --disable-pip-version-check -r requirements-dev.txt
	touch $(VENV)/.program-deps $@

plan: $(VENV)/.program-deps
	$(PY) scripts/plan.py --stack $(STACK)

# Every shipped stack, by one plan.py (the stacks after the first side by side in copies of it): out/plan/<stack>.
plan-all: $(VENV)/.program-deps
	$(PY) scripts/plan.py $$(ls stacks | sed -n 's/^Pulumi\.\(.*\)\.yaml$$/--stack \1/p') > /dev/null

# Writes stacks/Pulumi.<stack>.yaml and <stack>-dr (engines/new_stack.py); asks what ARGS does not give.
new-stack: $(VENV)/.program-deps
	$(PY) scripts/new_stack.py $(ARGS)

system-deps:
	bash scripts/install_system_deps.sh

# pg_dump/pg_restore 17 for the newer-client-into-older-server test (Debian ships PostgreSQL 15 only).
$(VENV)/postgresql-17/bin/pg_restore: | $(VENV)/.dev-deps
	$(PY) scripts/fetch_pg_client.py 17.11.0 $(VENV)/postgresql-17

test: $(VENV)/.dev-deps system-deps $(VENV)/postgresql-17/bin/pg_restore
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.dev-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check rules components engines benchmarks testkit scripts __main__.py policy tests/pure tests/policy

bench: $(VENV)/.dev-deps system-deps
	$(PY) scripts/bench_backup.py

clean:
	rm -rf out .pytest_cache .ruff_cache
