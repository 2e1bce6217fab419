# Every target creates and uses the project's own virtual environment (.venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck contracts pytest check benchmark-quick benchmark clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)            ## start the built-in default tree in the foreground (Ctrl-C stops it)
	$(BIN)/supervise start

test: lint contracts typecheck pytest ## the house's checks, then the whole test suite

lint: $(STAMP)           ## ruff over the code, the components, the tests and the scripts
	$(BIN)/ruff check supervisor_tree workers tests scripts

contracts: $(STAMP)      ## the architecture's import contracts (pyproject.toml, [tool.importlinter])
	$(BIN)/lint-imports

typecheck: $(STAMP)      ## mypy --strict over the package, the components included
	$(BIN)/mypy

pytest: $(STAMP)         ## the test suite alone
	$(BIN)/python -m pytest -q

benchmark-quick: $(STAMP) ## every benchmark, short (under 2 minutes)
	$(BIN)/supervise bench --quick

benchmark: $(STAMP)
	$(BIN)/supervise bench

check: test benchmark-quick ## tests, quick benchmark, then the regression check against the committed baseline
	$(BIN)/python scripts/check_regression.py bench/baseline.json "$$(ls -t bench-results/*.json | head -1)"

clean:
	rm -rf $(VENV) build *.egg-info bench-results .mypy_cache .ruff_cache .import_linter_cache
