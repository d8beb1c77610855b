# Self-documenting: `make help` lists the targets with their descriptions.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3.11
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
	# torch first, pinned: its CPU build lies on disk; a looser spec would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools

train: $(STAMP) ## Train a tiny SantaCoder with FIM on the Python standard library (CPU, a few minutes)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP) ## Run the test suite
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP) ## Check style with ruff
	$(BIN)/ruff check src tests train.py
	$(BIN)/ruff format --check src tests train.py

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix src tests train.py
	$(BIN)/ruff format src tests train.py

clean: ## Remove caches and logs (keeps .venv and data/)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache wandb
	find . -name __pycache__ -prune -exec rm -rf {} +

.PHONY: help install train test lint format clean
