# `make demo` and `make test` are the only set-up steps: each creates .venv
# when it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench bench-frozen bench-faults clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch and torchvision first and on their own, so pip takes the pinned
# builds rather than resolving them through ray's dependency tree.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ftsweep run spaces/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=25

lint: $(STAMP)
	$(BIN)/ruff check search trainables tests benchmarks
	$(BIN)/ruff format --check search trainables tests benchmarks
	$(BIN)/mypy search trainables

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench

bench-frozen: $(STAMP)
	$(BIN)/python benchmarks/frozen_depth.py

bench-faults: $(STAMP)
	$(BIN)/python -m benchmarks.faults

clean:
	rm -rf $(VENV) results/*/
