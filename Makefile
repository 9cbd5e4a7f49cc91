# The two commands: `make run` starts the daemon on the embedded PostgreSQL,
# `make test` installs everything into .venv and runs lint, types and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run dev test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `make run` needs only what `serve` imports; the test and dev tools (browser tests,
# fuzzing, type checking: several hundred MB) come with `make test`.
$(RUN_STAMP): $(BIN)/python pyproject.toml
	@echo "Installing dispatcher and what it needs to run into $(VENV) ..."
	$(BIN)/pip install --progress-bar off -e '.[fast]'
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	@echo "Installing the test and development tools into $(VENV) ..."
	$(BIN)/pip install --progress-bar off -e '.[fast,test,dev]'
	touch $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/dispatcher serve

# Local development: delivers to http, any port, loopback/private addresses. Never in production.
dev: $(RUN_STAMP)
	$(BIN)/dispatcher serve --dev

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest

# `make bench BENCH_ARGS="--quick"`; bench/engine_burst.py (the engine alone) runs by hand.
bench: $(STAMP)
	$(BIN)/python bench/serve_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
