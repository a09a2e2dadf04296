# Set-up and the two quick-start commands. `make run` and `make test` each create the
# virtual environment on first use (CPU PyTorch, then the package), so a fresh clone
# needs nothing else. Use TORCH=torch (or a CUDA wheel spec) on a GPU machine.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
OUT ?= runs/quickstart
BIN := $(VENV)/bin

.PHONY: setup run test test-fast lint docs bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/autodeeplab run --out $(OUT)

lint: setup
	$(BIN)/ruff check src tests benchmarks tools hubconf.py
	$(BIN)/ruff format --check src tests benchmarks tools hubconf.py
	$(BIN)/lint-imports

# The documentation site (mkdocs, material theme, API reference from the docstrings) into
# build/site, in strict mode: a broken link, a missing page or reference fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The whole suite, the 20 slowest tests listed at the end (pyproject's addopts).
test: lint docs
	$(BIN)/python -m pytest

# The unit tests only: no search or training runs, subprocesses or torchrun (under 60 s on 2
# cores): one pytest-xdist worker a core, one torch thread a worker.
test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow" -n 2

bench: setup
	$(BIN)/python benchmarks/search_step.py
