# Every target sets itself up: a fresh clone needs only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch is installed first so that pip never pulls a multi-GB CUDA build;
# GPU workers override it, e.g. `make install TORCH_SPEC="torch==2.13.0 --index-url ..."`.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install demo test bench-detect clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install --quiet $(TORCH_SPEC) 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install --quiet -e ".[dev,bench]" 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import torch, prefect, polars, pandera, pyarrow, sae_pipeline"
	touch $@

demo: install
	$(BIN)/sae-pipeline demo

test: install
	$(BIN)/python -m pytest -q

bench-detect: install
	$(BIN)/python benchmarks/detection.py

clean:
	rm -rf $(VENV) .prefect outputs .pytest_cache
