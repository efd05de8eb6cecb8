# chatstore: `make demo` runs it on an embedded PostgreSQL, `make test` runs every check
# (`make unit` only the tests that need no database, in seconds),
# `make bench` compares it with other chat-history libraries, `make example` serves the todo
# chatbot (examples/todo_chatbot) on an embedded PostgreSQL.
# Each installs what it needs into .venv first (PYTHON picks the interpreter, 3.11+).

PYTHON ?= python3
VENV   ?= .venv
# PostgreSQL majors `make test` runs the suite on: 16 and 18 embedded, and 15 from the
# machine's own packages where they are installed (see tests/conftest.py).
PG15_BIN ?= /usr/lib/postgresql/15/bin
PG     ?= $(if $(wildcard $(PG15_BIN)/initdb),15 )16 18
BIN    := $(VENV)/bin
# The benchmark's venv holds the other libraries too (bench/requirements-peers.txt); it is
# kept apart because one of them pins an older asyncpg.
BENCH_VENV ?= .venv-bench

.PHONY: install demo example unit test lint versions bench bench-quick bench-citus clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/chatstore demo

# The reference backend and its web page on http://127.0.0.1:8000/ (offline scripted model unless
# OPENAI_API_KEY is set); Ctrl-C stops it.
example: install
	$(BIN)/python -m examples.todo_chatbot

# ruff, mypy --strict, and chatstore/sql/_statements.py in step with queries.sql (so a
# statement name mypy checks is one the file defines).
lint: install
	$(BIN)/ruff check chatstore tests examples bench
	$(BIN)/python chatstore/sql/generate.py --check
	$(BIN)/mypy

# The unit layer alone (tests/unit): no PostgreSQL is started and nothing is linted. Most of
# these tests wait on a `chatstore` subprocess: two pytest processes share them (--shard, see
# tests/conftest.py), one per core; the first one's report follows the second's.
UNIT_LOG := $(VENV)/unit-shard-1.log
unit: install
	@$(BIN)/pytest -q tests/unit --shard=1/2 >$(UNIT_LOG) 2>&1 & first=$$!; \
	$(BIN)/pytest -q tests/unit --shard=2/2; second=$$?; \
	wait $$first; first=$$?; echo "-- shard 1/2 of tests/unit:"; cat $(UNIT_LOG); \
	rm -f $(UNIT_LOG); [ $$first -eq 0 ] || exit $$first; exit $$second

# The whole suite once per PostgreSQL major version in $(PG), after lint.
# Set CHATSTORE_TEST_DSN to run against a server of your own instead.
test: lint
	@$(if $(filter file,$(origin PG)),$(if $(filter 15,$(PG)),,echo "== PostgreSQL 15: skipped, $(PG15_BIN)/initdb not found \
	  (apt-get install postgresql-15 adds it)";))
	@for v in $(PG); do \
	  echo "== PostgreSQL $$v"; \
	  CHATSTORE_TEST_PG=$$v CHATSTORE_TEST_PG15_BIN=$(PG15_BIN) $(BIN)/pytest || exit $$?; \
	done

# The majors `make test` would run on here.
versions:
	@echo $(PG)

$(BENCH_VENV)/.installed: pyproject.toml bench/requirements-peers.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	    -e '.[embedded]' -r bench/requirements-peers.txt
	touch $@

# The full side-by-side benchmark: rewrites docs/benchmarks.md and its plots (~25 minutes).
bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench

# Small sizes, under three minutes, report in a temp folder: proves the harness still runs.
bench-quick: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench --quick

# chatstore through a Citus coordinator beside a single node (docs/benchmarks-citus.md);
# needs a live cluster: CHATSTORE_BENCH_CITUS=$$(../shared/citus/cluster.sh url) make bench-citus
bench-citus: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench.citus

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist *.egg-info
