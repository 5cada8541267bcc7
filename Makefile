# `make demo` and `make test` create .venv, install the project into it and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= .ci/constraints.txt

.PHONY: install demo test test-lowest lint format bench

$(VENV)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev,lite]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) recipes/train_prn.py --overwrite  # rerunnable: replaces the last demo run

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint
	$(PY) -m pytest -q

# The lowest release of every direct dependency that setup.cfg admits (uv's lowest-direct
# resolution), tested: torch 2.3.0 among them, which PyPI serves only as a CUDA build (~3 GB).
LOWEST_VENV ?= .venv-lowest
test-lowest:
	$(PYTHON) -m venv --clear $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q uv
	$(LOWEST_VENV)/bin/uv pip install -q --python $(LOWEST_VENV)/bin/python \
		--resolution lowest-direct -e '.[dev,lite]'
	$(LOWEST_VENV)/bin/python -m pytest -q

bench: install
	$(PY) benchmarks/bench_synthesis.py
	$(PY) benchmarks/bench_prn.py
