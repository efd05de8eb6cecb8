# chatstore: `make demo` runs it on an embedded PostgreSQL, `make test` runs every check.
# Both install what they need into .venv first (PYTHON picks the interpreter, 3.11+).

PYTHON ?= python3
VENV   ?= .venv
PG     ?= 16 18
BIN    := $(VENV)/bin

.PHONY: install demo test lint clean

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

clean:
	rm -rf $(VENV) build dist *.egg-info
