# Two commands do all the set-up on a fresh machine:
#   make reproduce   # the whole pipeline on the embedded default (PROFILE=smoke|cpu|gpu)
#   make test        # the test suite
# Each creates .venv and installs the project into it when missing.

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
KERNEL_ARGS := --prefix $(VENV) --name aes-companion --display-name "AesExpert Companion"

.PHONY: venv reproduce test lab strip clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install $(KERNEL_ARGS)  # the kernel every notebook declares
	touch $(STAMP)

venv: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/aes reproduce --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/python -m ipykernel install $(KERNEL_ARGS)
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser $(ROOT_FLAG) --notebook-dir .

strip:
	$(BIN)/aes strip notebooks/*.ipynb

clean:  # everything the pipeline wrote; keeps outputs/README.md
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
