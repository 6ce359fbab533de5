# splatseg: set-up and the two quick-start targets.
# `make demo` and `make test` each create .venv (once) and install what they need.
# Users with a CUDA GPU elsewhere: set TORCH_SPEC (see README) before the first `make`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# pytest-xdist workers for `make test` and `make test-fast` (--dist loadscope: a module's tests share
# one worker, so its module-scoped fixture, often a trained run, is built once, not once per worker;
# measured: fast suite 2 min 53 s against 4 min 17 s with the default scheduling). The one place
# the worker count is set; .ci/run calls `make test`. Each worker runs torch on one thread (tests/conftest.py).
TEST_WORKERS ?= 2
# `make mutation MODULE=query` runs one module of [tool.splatseg.mutation.modules] (pyproject.toml)
MODULE ?=

.PHONY: setup demo test test-fast bench mutation clean

$(BIN)/.splatseg-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

setup: $(BIN)/.splatseg-installed

node_modules/.package-lock.json: package.json
	@if command -v npm >/dev/null 2>&1; then npm install --no-audit --no-fund; \
	else echo "npm not found: export checks with splat-transform will be skipped"; fi

demo: setup
	$(BIN)/splatseg demo

test: setup node_modules/.package-lock.json
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope -ra tests

test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope -ra -m "not slow and not browser" tests

# Mutation testing of the core modules (README, development): on demand only, never in CI; a full
# run takes hours on two cores. Results stay in mutants/ (git-ignored).
mutation: setup
	@$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install "mutmut==3.8.1"  # pyproject's `mutation` extra
	$(BIN)/python scripts/mutation.py $(MODULE)

bench: setup
	$(BIN)/python scripts/bench_render.py

clean:
	rm -rf $(VENV) node_modules
