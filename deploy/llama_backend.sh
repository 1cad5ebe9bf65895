#!/bin/sh
# Which llama.cpp build the set-up makes: prints "cuda" or "cpu".
# $1: auto (default), cpu or cuda. auto picks CUDA only when an NVIDIA GPU
# answers nvidia-smi and the CUDA compiler is installed: a GPU alone cannot
# build it, and the compiler alone (a CI box with the toolkit) has nothing to run on.
want=${1:-auto}
case "$want" in
  cpu|cuda) echo "$want"; exit 0 ;;
  auto) ;;
  *) echo "LLAMA_BACKEND must be auto, cpu or cuda (found: $want)" >&2; exit 2 ;;
esac
nvcc=$(command -v nvcc || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && [ -n "$nvcc" ]; then
  echo cuda
else
  echo cpu
fi
