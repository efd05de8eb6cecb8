# chatstore: `make demo` runs it on an embedded PostgreSQL, `make test` runs every check,
# `make bench` compares it with other chat-history libraries.
# Both install what they need into .venv first (PYTHON picks the interpreter, 3.11+).

PYTHON ?= python3
VENV   ?= .venv
PG     ?= 16 18
BIN    := $(VENV)/bin
# The benchmark's venv holds the other libraries too (bench/requirements-peers.txt); it is
# kept apart because one of them pins an older asyncpg.
BENCH_VENV ?= .venv-bench

.PHONY: install demo test lint bench bench-quick clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/chatstore demo

lint: install
	$(BIN)/ruff check chatstore tests
	$(BIN)/mypy

# The whole suite once per PostgreSQL major version in $(PG) (embedded servers), after lint.
# Set CHATSTORE_TEST_DSN to run against a server of your own instead.
test: lint
	@for v in $(PG); do \
	  echo "== PostgreSQL $$v"; \
	  CHATSTORE_TEST_PG=$$v $(BIN)/pytest || exit $$?; \
	done

$(BENCH_VENV)/.installed: pyproject.toml bench/requirements-peers.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	    -e '.[embedded]' -r bench/requirements-peers.txt
	touch $@

# The full side-by-side benchmark: rewrites docs/benchmarks.md and its plot (~15 minutes).
bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench

# Small sizes, under three minutes, report in a temp folder: proves the harness still runs.
bench-quick: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench --quick

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist *.egg-info
