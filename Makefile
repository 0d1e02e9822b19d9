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

# Local Prefect round trip on 127.0.0.1 (see README "Deploy"); state in $(PREFECT_HOME), pids in $(PREFECT_HOME)/*.pid.
PREFECT_PORT ?= 4242
export PREFECT_PORT

.PHONY: install lint demo test bench bench-detect bench-context bench-review bench-gpu gpu-site clean deploy-local deploy-smoke \
	deploy-stop

install: $(VENV)/.installed

# pip's log goes to a file (it is long) and is shown only if an install fails.
PIP = $(BIN)/pip install --quiet --log $(VENV)/pip.log

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "installing $(TORCH_SPEC) and the project into $(VENV) (about a minute)"
	@$(PIP) $(TORCH_SPEC) >/dev/null 2>&1 || { tail -40 $(VENV)/pip.log; exit 1; }
	@$(PIP) -e ".[dev,workers]" >/dev/null 2>&1 || { tail -40 $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c "import torch, prefect, polars, pandera, pyarrow, sae_pipeline"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	@$(PIP) -e ".[dev,bench]" >/dev/null 2>&1 || { tail -40 $(VENV)/pip.log; exit 1; }
	touch $@

demo: install
	$(BIN)/sae-pipeline demo

# One worker per core, a test file per worker at a time (module fixtures such as moto's server start once).
test: install
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

# ruff (settings in pyproject.toml): lint and formatting are both checked, nothing is rewritten.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Lake-scale and recurring-run benchmarks; each prints JSON and rewrites its own section of BENCHMARKS.md.
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/memory.py --one-row-group
	$(BIN)/python benchmarks/drift_speed.py
	$(BIN)/python benchmarks/model_update.py
	$(BIN)/python benchmarks/cli_latency.py
	$(BIN)/python benchmarks/lakehouse.py
	$(BIN)/python benchmarks/scale_out.py

bench-detect: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/detection.py --selection leave-sets-out
	$(BIN)/python benchmarks/neighbour_search.py

# Judging rows in their context (issue 18): SMD per machine and as a fleet, the context scenario, expected nulls,
# the cost of context. The SMD part reads ../shared/data (skipped with a note without it); 7-14 min on 2 shared cores.
bench-context: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/context.py

# The review loop (issue 19) on the demo's sample lake: incidents, precision, recall and alerts per day before and
# after a simulated reviewer marks incidents from the labels; under a minute on 2 cores.
bench-review: install
	$(BIN)/python benchmarks/review_loop.py

# Training and scoring on a CUDA device, and the pipeline's ratio to a pyarrow copy there (issue 22). On a machine with
# an NVIDIA GPU it first swaps the CPU build of torch in $(VENV) for the CUDA build of the same version (several GB).
bench-gpu: install
	$(BIN)/python benchmarks/gpu.py --install-cuda-torch

# For a GPU machine without a package index whose python3 already has a CUDA torch, numpy, pyarrow, scikit-learn,
# scipy, safetensors, PyYAML and tqdm: the rest that benchmarks/gpu.py imports, installed here for its Python and
# packed small enough to travel with the checkout (the command that uses it is in the script's docstring).
# The versions are those this project is tested with; deltalake is left out (28 MB packed; Parquet lakes need none).
GPU_PYTHON_VERSION ?= 3.12
GPU_SITE_PACKAGES = polars==2.1.0 polars-runtime-32==2.1.0 pandera==0.35.0 typeguard==4.6.1 pydantic==2.14.4 \
	pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 faiss-cpu==1.15.1 botocore==1.44.8 \
	jmespath==1.1.0
gpu-site: .gpu-site/site.tar.xz

.gpu-site/site.tar.xz: Makefile
	rm -rf .gpu-site && mkdir -p .gpu-site
	$(PYTHON) -m pip install --quiet --no-deps --no-compile --only-binary=:all: --target .gpu-site/site \
		--python-version $(GPU_PYTHON_VERSION) --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		$(GPU_SITE_PACKAGES)
	tar -C .gpu-site -cf - site | xz -9 -T0 > $@.partial
	mv $@.partial $@
	rm -rf .gpu-site/site
	@du -h $@

deploy-local: install
	$(BIN)/python deployments/local.py up

deploy-smoke: install
	$(BIN)/python deployments/local.py smoke

deploy-stop:
	$(BIN)/python deployments/local.py down

clean:
	rm -rf $(VENV) .prefect outputs .pytest_cache
