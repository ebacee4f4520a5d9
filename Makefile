# Common tasks. `make run` and `make test` are the two commands of the README.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast install lint format typecheck imports migrations-check fuzz ci bench drill drill-docs clean

run:
	./scripts/run

$(VENV)/.rebound-dev: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.rebound-dev

# The whole suite. PostgreSQL and Redis on 127.0.0.1 are used when they answer; otherwise the tests that need
# them are skipped and one line says so. CI sets REBOUND_REQUIRE_SERVICES=1 so that nothing is skipped.
# The whole suite on pytest-xdist workers (each with its own PostgreSQL database and Redis db, its processes
# on ports of their own): the fast tests, then the slow ones (real processes, kill -9, long waits, thread races),
# a file per worker at a time so that a module's shared processes stay in one worker. Most of a slow test is
# waiting. TEST_WORKERS and SLOW_WORKERS set the number of workers of each part (2 and 2: the machine's cores).
TEST_WORKERS ?= 2
SLOW_WORKERS ?= 2
test: install
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)
	$(PY) -m pytest -m slow -n $(SLOW_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The suite without the tests marked slow, on two workers.
test-fast: install
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: install
	$(PY) -m mypy config core recovery healing console mcp_server drill bench
	$(PY) -m mypy --strict rebound_client

# The house's rules: layer contracts (pyproject.toml, [tool.importlinter]) and no import cycles.
imports: install
	$(VENV)/bin/lint-imports --no-cache
	$(PY) scripts/check_cycles.py

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

# schemathesis over every operation of /api/schema/, as an agent and as an operator, against gunicorn and a worker
# in production mode on a PostgreSQL database and a Redis db of its own (dropped and flushed at the end); zero
# failures or it fails. FUZZ_ARGS="--max-examples 200 --continue-on-failure" to dig; docs/fuzzing.md.
fuzz: install
	$(PY) scripts/fuzz.py $(FUZZ_ARGS)

ci:
	bash .ci/run

bench: install
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) -m bench.intake --write-docs
	$(PY) -m bench.breakers --write-docs
	$(PY) -m bench.sdk --write-docs
	$(PY) -m bench.checkpoints --write-docs
	$(PY) -m bench.health_checks --write-docs
	$(PY) -m bench.escalations --write-docs
	$(PY) -m bench.console --write-docs
	$(PY) -m bench.mcp --write-docs

# The chaos drill (docs/drill.md) against a running Rebound (`make run`'s, unless DRILL_ARGS says --url and keys):
# a fleet recovering through Rebound and a fleet of naive retries against identical faults, side by side, and
# whether the goals are met; exits 1 when a correctness goal is missed. SCENARIO=full for the long one;
# DRILL_ARGS="--seed N" repeats a run exactly, "--json PATH" writes the figures.
SCENARIO ?= smoke
DRILL_ARGS ?=

drill: install
	$(PY) manage.py drill --scenario $(SCENARIO) $(DRILL_ARGS)

# docs/drill.md and its plot, from the full scenario run twice (the second run with what the first learned).
drill-docs: install
	$(PY) manage.py drill --scenario full --runs 2 --report docs/drill.md --plot docs/img/drill.png $(DRILL_ARGS)

clean:
	rm -rf var .pytest_cache .ruff_cache .mypy_cache
