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
CHROMIUM ?= /usr/bin/chromium

.PHONY: venv browser reproduce test lab strip clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install $(KERNEL_ARGS)  # the kernel every notebook declares
	touch $(STAMP)

venv: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/aes reproduce --profile $(PROFILE)

test: $(STAMP) browser
	$(BIN)/python -m pytest

# Debian's Chromium for tests/test_browser_lab.py (Playwright drives it; it never downloads a
# browser). Installed when missing and running as root on an apt system; else the test is skipped.
browser:
	@test -x $(CHROMIUM) || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lab: $(STAMP)
	$(BIN)/python -m ipykernel install $(KERNEL_ARGS)
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser $(ROOT_FLAG) --notebook-dir . --KernelManager.transport=ipc

strip:
	$(BIN)/aes strip notebooks/*.ipynb

clean:  # everything the pipeline wrote; keeps outputs/README.md
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf notebooks/outputs  # left by JupyterLab runs of versions before setup() fixed the folder
