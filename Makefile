# Set-up and the two quick-start commands. `make run` and `make test` each create the
# virtual environment on first use (CPU PyTorch, then the package), so a fresh clone
# needs nothing else. Use TORCH=torch (or a CUDA wheel spec) on a GPU machine.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
OUT ?= runs/quickstart
# pytest-xdist workers for the tests (auto: one a core)
WORKERS ?= auto
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

# The whole suite, the 20 slowest tests listed at the end (pyproject's addopts). One
# pytest-xdist worker a core with one torch thread each: the tests' tensors are too small
# for intra-op threads to pay, so two single-threaded workers on 2 cores take about 60% of
# the time of one two-threaded process. Each test still runs its own subprocesses and
# torchrun ranks, so the cores are briefly oversubscribed; no test asserts on time (the
# kill/resume waits allow 60 s each, for events that take a second or two).
test: lint docs
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(WORKERS)

# The unit tests only: no search or training runs, subprocesses or torchrun, in the same
# workers.
test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow" -n $(WORKERS)

bench: setup
	$(BIN)/python benchmarks/search_step.py
