# `make demo` and `make test` work on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-all clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned first: its CPU build lies on this machine's disk; a looser pin pulls CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nmc demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

# the slow tests too (larger models)
test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "" tests

clean:
	rm -rf $(VENV) out build *.egg-info
