# Set-up, demo and tests. Each target creates .venv and installs what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU wheel of this torch version is what CI uses; an unpinned torch would pull a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0
DATA ?= $(firstword $(wildcard ../shared/data/cnndm/frank_cnndm_test250.jsonl))
METHOD ?= prefix

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --method $(METHOD) --output-dir runs/demo $(if $(DATA),--data $(DATA))

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
