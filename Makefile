# lungsound: `make quickstart` then `make test` on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LS     := $(VENV)/bin/lungsound
STAMP  := $(VENV)/.installed
DATA   ?= data/ICBHI_final_database
SEEDS  ?= 1-5

export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.DEFAULT_GOAL := help
.PHONY: help setup test test-all quickstart data-stats clean-cache

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[dev]'
	$(PY) -c "import torch, torchaudio; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__)"
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install lungsound (editable) with the test tools

test: setup ## fast test suite (about 10 minutes on 2 cores)
	$(PY) -m pytest -q

test-all: setup ## every test, the slow ones too
	$(PY) -m pytest -q -m "slow or not slow"

quickstart: setup ## the main job on the built-in synthetic data
	$(LS) data stats

data-stats: setup ## counts of the ICBHI database in DATA
	$(LS) data stats --root $(DATA)

clean-cache: ## remove cached cycles/features (~/.cache/lungsound/features)
	rm -rf $${LUNGSOUND_CACHE:-$$HOME/.cache/lungsound}/features
