# Every target creates and uses the project's own virtual environment (.venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run console browser test test-ray lint typecheck contracts pytest check benchmark-quick benchmark clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)            ## start the built-in default tree in the foreground (Ctrl-C stops it)
	$(BIN)/supervise start

console: $(STAMP)        ## a Python REPL attached to the running tree: tree(), info(id), call, cast, kill, profile(id)
	$(BIN)/supervise console

# The dashboard's browser tests drive Debian's chromium (never a browser that playwright
# downloads).  Installed here as root when missing; apt's sandbox user needs a TMPDIR it
# can write (/tmp may be 0700).  Where it cannot be installed those tests skip and say why.
browser:                 ## Debian's chromium for the dashboard's end-to-end tests (as root; once)
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make browser: installing Debian's chromium"; \
	    TMPDIR=/var/tmp apt-get update -qq && \
	    TMPDIR=/var/tmp DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	    echo "make browser: could not install chromium; the dashboard's browser tests will skip"; \
	  else \
	    echo "make browser: /usr/bin/chromium is missing and apt-get as root is not available; the dashboard's browser tests will skip"; \
	  fi; \
	fi

test: lint contracts typecheck pytest ## the house's checks, then the whole test suite

lint: $(STAMP)           ## ruff over the code, the components, the tests and the scripts
	$(BIN)/ruff check supervisor_tree workers tests scripts

contracts: $(STAMP)      ## the architecture's import contracts (pyproject.toml, [tool.importlinter])
	$(BIN)/lint-imports

typecheck: $(STAMP)      ## mypy --strict over the package, the components included
	$(BIN)/mypy

pytest: $(STAMP) browser ## the test suite alone
	$(BIN)/python -m pytest -q

# Ray is an optional extra (large): installed into this venv only here, never by `make test`.  The tests
# start and stop a local three-node Ray cluster themselves, on loopback only (tests/on_ray/conftest.py).
test-ray: $(STAMP)       ## the tree on a local multi-node Ray cluster (installs the ray extra first)
	@$(BIN)/python -c "import ray" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[ray]'
	SUPERVISE_RAY_TESTS=1 $(BIN)/python -m pytest -q tests/on_ray

benchmark-quick: $(STAMP) ## every benchmark, short (about 4 minutes on 2 cores)
	$(BIN)/supervise bench --quick

benchmark: $(STAMP)
	$(BIN)/supervise bench

check: test benchmark-quick ## tests, quick benchmark, then the regression check against the committed baseline
	$(BIN)/python scripts/check_regression.py bench/baseline.json "$$(ls -t bench-results/*.json | head -1)"

clean:
	rm -rf $(VENV) build *.egg-info bench-results .mypy_cache .ruff_cache .import_linter_cache
