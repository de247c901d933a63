# Set-up is part of every target: a missing .venv is created and the project installed.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo base-model bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/panoptic-detr demo --out runs/demo

base-model: $(STAMP)
	$(BIN)/panoptic-detr base-model --out runs/base-model

bench: $(STAMP)
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

# on CUDA: r50-panoptic DDP training (autocast, channels-last), predict, evaluate; figures printed
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) runs
