# killstream — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: help venv run test unit lint bench bench-store chaos migrate invoke-poller invoke-fetcher sam-local redrive dlq postgres psql stop wipe clean

help:
	@echo "make run     — the whole pipeline on this machine (ARGS=--replay for offline, ARGS=\"--replay DIR\" for a folder)"
	@echo "make test    — the whole suite (unit, integration, e2e, infrastructure); make unit — the unit tests alone"
	@echo "make lint    — ruff check, ruff format --check and mypy"
	@echo "make bench   — benchmarks; make bench-store — the storage benchmark; make chaos — fault injection"
	@echo "make sam-local — sam build + sam local invoke on events/ in a Lambda-like container (podman if no Docker)"
	@echo "make psql    — psql on the local database; make stop — stop it; make wipe — delete it; make clean — the rest"

$(STAMP): requirements-dev.txt layers/dependencies/requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "killstream needs Python >= 3.11, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)
	@echo "venv ready: $(VENV) (pinned dependencies, killstream installed editable)"

venv: $(STAMP)

postgres:
	@bash scripts/ensure-postgres.sh

run: $(STAMP) postgres
	$(VENV)/bin/killstream run $(ARGS)

# pytest exits 5 when it collected no test: a suite that tests nothing is a failure.
test: $(STAMP) postgres
	@$(PY) -m pytest $(ARGS); status=$$?; \
	if [ $$status = 5 ]; then echo "make test: no tests ran" >&2; exit 1; fi; exit $$status

# The unit tests need neither PostgreSQL nor a local AWS: seconds, no setup.
unit: $(STAMP)
	@$(PY) -m pytest tests/unit $(ARGS); status=$$?; \
	if [ $$status = 5 ]; then echo "make unit: no tests ran" >&2; exit 1; fi; exit $$status

# The handlers are all app.py: the fetcher's, the reconciler's, the enricher's, the notifier's and the backfill's are checked
# in mypy runs of their own.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy functions/fetcher/app.py
	$(VENV)/bin/mypy functions/reconciler/app.py
	$(VENV)/bin/mypy functions/enricher/app.py
	$(VENV)/bin/mypy functions/notifier/app.py
	$(VENV)/bin/mypy functions/backfill/app.py

migrate: $(STAMP) postgres
	$(VENV)/bin/killstream migrate $(ARGS)

bench-store: $(STAMP) postgres
	$(PY) bench/bench_store.py $(ARGS)

bench: $(STAMP) postgres
	$(PY) bench/run_all.py $(ARGS)

chaos: $(STAMP) postgres
	$(PY) bench/chaos.py $(ARGS)

# The same handlers on the same events as `sam local invoke -e`, without Docker.
invoke-poller: $(STAMP)
	$(VENV)/bin/killstream invoke poller --event events/scheduled-tick.json $(ARGS)

invoke-fetcher: $(STAMP) postgres
	$(VENV)/bin/killstream invoke fetcher --event events/sqs-inline-esi.json --event events/sqs-metadata-only.json $(ARGS)

# The built functions and layers in a Lambda-like container: `sam build`, then `sam local invoke` on
# events/ against local stand-ins. Prepares a container engine (podman) and a Python 3.13 base image
# once when Docker is absent (scripts/sam-local/). ARGS="--serve" keeps the stand-ins up instead.
sam-local: $(STAMP) postgres
	$(PY) scripts/sam-local/sam_local.py $(ARGS)

# DLQ_URL and QUEUE_URL name the deployed queues (see the stack outputs).
dlq: $(STAMP)
	$(VENV)/bin/killstream dlq $(ARGS)

redrive: $(STAMP)
	$(VENV)/bin/killstream redrive $(ARGS)

# psql on the database the commands use ($$DATABASE_URL, else the embedded server, started if needed).
psql: $(STAMP) postgres
	@command -v psql >/dev/null || { echo "make psql: psql not found: install the PostgreSQL client (Debian/Ubuntu: apt-get install postgresql-client), or use the URL killstream db url prints" >&2; exit 1; }
	@url=$$($(VENV)/bin/killstream db url) && exec psql "$$url" $(ARGS)

# The embedded PostgreSQL `make run` leaves running, in $$KILLSTREAM_LOCAL_DIR (default .local): stop
# keeps its data, wipe deletes it. Neither needs the venv.
stop:
	@bash scripts/local-postgres.sh stop

wipe:
	@bash scripts/local-postgres.sh wipe

# Everything built or cached; the local database stays (make wipe deletes it).
clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .hypothesis .mypy_cache .ruff_cache *.egg-info
	@echo "kept $${KILLSTREAM_LOCAL_DIR:-.local} (the local database): make wipe deletes it"
