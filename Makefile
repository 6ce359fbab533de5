# splatseg: set-up and the two quick-start targets.
# `make demo` and `make test` each create .venv (once) and install what they need.
# Users with a CUDA GPU elsewhere: set TORCH_SPEC (see README) before the first `make`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-fast bench clean

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
	$(BIN)/python -m pytest -n 2 -ra tests

test-fast: setup
	$(BIN)/python -m pytest -n 2 -ra -m "not slow and not browser" tests

bench: setup
	$(BIN)/python scripts/bench_render.py

clean:
	rm -rf $(VENV) node_modules
