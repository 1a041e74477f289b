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

# Debian packages whose photographs complete AesMMIT-mini's full photo set (aes_lib/assets/photos.yaml)
PHOTO_PACKAGES := lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds opencv-doc plasma-workspace-wallpapers

.PHONY: venv photos reproduce test lab strip clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
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

test: $(STAMP) photos
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name aes-companion --display-name "AesExpert Companion"
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser $(ROOT_FLAG) --notebook-dir .

strip:
	$(BIN)/aes strip notebooks/*.ipynb

clean:  # everything the pipeline wrote; keeps outputs/README.md
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
