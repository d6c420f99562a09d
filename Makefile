# Everything starts from python3 and make: the first target that needs it creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two installs into one venv: `make demo` needs reqlog, FastAPI and uvicorn only (the `demo`
# extra, seconds from the pip cache); `make test` adds the rest (the `dev` extra: every
# integration, the linters, the docs site, the packaging tools).
DEMO_STAMP := $(VENV)/.installed-demo
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo serve test test-fast lint typecheck pytest pytest-fast dist bench docs docs-serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[demo]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

serve: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py --serve

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP)
	$(BIN)/python -m pytest

# The tests marked slow (real servers and workers, the package and the site built) left out.
pytest-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -m "not slow"

# What CI runs (.ci/run): everything.
test: lint typecheck pytest

# A developer's quick loop: the linters and the fast tests.
test-fast: lint typecheck pytest-fast

# The wheel and the sdist into dist/, checked as the package index would.
dist: $(DEV_STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

# wrk (Debian's package) drives the uvicorn benchmark; without it that part is skipped.
bench: $(DEV_STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1; } \
	      || echo "bench: could not install wrk with apt-get; the uvicorn requests/s benchmark will be skipped"; \
	  else \
	    echo "bench: wrk is missing and this is not root (or not Debian): install wrk to run the uvicorn requests/s benchmark; it will be skipped"; \
	  fi; }
	@command -v valgrind >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y valgrind >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y valgrind >/dev/null 2>&1; } \
	      || echo "bench: could not install valgrind; the instruction counts will be skipped"; \
	  else \
	    echo "bench: valgrind is missing: the instruction counts will be skipped"; \
	  fi; }
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

# The documentation site (mkdocs, Material theme, API reference from docstrings) into site/.
docs: $(DEV_STAMP)
	$(BIN)/python -m mkdocs build --strict

docs-serve: $(DEV_STAMP)
	$(BIN)/python -m mkdocs serve

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache site dist
