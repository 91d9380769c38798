# `make demo` and `make test` are the only set-up steps: each creates .venv
# when it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint constraints bench bench-frozen bench-faults bench-onnx bench-shipping bench-warm gpu-check clean

# --no-compile: pip would byte-compile every module of torch and ray up front
# (about 35 s of the install); Python compiles the ones imported, once.
PIP_INSTALL := $(BIN)/pip install --quiet --no-compile
# Test processes side by side (pytest-xdist), each module in one of them, so a
# module's Ray session and sweep are started once.
TEST_WORKERS ?= 2
# Python writes the bytecode of each module it imports into .venv, once. Where
# PYTHONDONTWRITEBYTECODE is set (as on our CI machines) every process, each
# Ray worker among them, compiled torch, torchvision and ray again: about 10 s
# of CPU a process, a fifth of the suite.
RUN := env -u PYTHONDONTWRITEBYTECODE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

# The exact tested set (pyproject.toml gives ranges).
CONSTRAINTS := constraints.txt

# torch and torchvision first and on their own, so pip takes the pinned
# builds rather than resolving them through ray's dependency tree.
$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP_INSTALL) -c $(CONSTRAINTS) torch torchvision
	$(PIP_INSTALL) -c $(CONSTRAINTS) -e '.[test]'
	$(BIN)/pip check
	touch $(STAMP)

demo: $(STAMP)
	$(RUN) $(BIN)/ftsweep run spaces/quickstart.yaml

test: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q -ra --durations=25 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check search trainables tests benchmarks
	$(BIN)/ruff format --check search trainables tests benchmarks
	$(BIN)/mypy search trainables
	$(BIN)/deptry .

bench: $(STAMP)
	$(RUN) $(BIN)/python -m benchmarks.bench

bench-frozen: $(STAMP)
	$(RUN) $(BIN)/python benchmarks/frozen_depth.py

bench-faults: $(STAMP)
	$(RUN) $(BIN)/python -m benchmarks.faults

# Every backbone family through the ONNX export, against PyTorch (about 4 minutes).
bench-onnx: $(STAMP)
	$(RUN) $(BIN)/python -m benchmarks.onnx_families

# Calibration, --tta and the finalists' ensemble on two sweeps' test splits (about 6 minutes).
bench-shipping: $(STAMP)
	$(RUN) $(BIN)/python -m benchmarks.shipping

# A warm-started second night against a cold one on the quickstart (about 7 minutes).
bench-warm: $(STAMP)
	$(RUN) $(BIN)/python -m benchmarks.warm_start

# The GPU path in one run (under 8 minutes on one GPU): pass/fail per item in
# benchmarks/results/gpu-check-<gpu>.md. The first thing to run on a GPU machine.
gpu-check: $(STAMP)
	$(RUN) $(BIN)/python -m benchmarks.gpu_check

# A fresh venv resolved within pyproject.toml's ranges (the newest releases
# they admit), frozen into constraints.txt: run the suite on it, then commit.
constraints:
	rm -rf /tmp/ftsweep-constraints
	$(PYTHON) -m venv /tmp/ftsweep-constraints
	/tmp/ftsweep-constraints/bin/pip install --quiet --no-compile --upgrade pip
	/tmp/ftsweep-constraints/bin/pip install --quiet --no-compile '.[test,mlflow]'
	{ sed -n '1,3p' $(CONSTRAINTS); /tmp/ftsweep-constraints/bin/pip freeze --exclude-editable \
		| grep -v '^ftsweep'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf /tmp/ftsweep-constraints

clean:
	rm -rf $(VENV) results/*/
