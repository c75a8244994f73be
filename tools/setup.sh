#!/usr/bin/env bash
# Set up everything spikestore needs in ./.venv, on a fresh machine.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip
# The CPU build of torch first: a plain `torch` requirement would pull a CUDA build.
pip install -q "torch==2.13.0"
pip install -q -e ".[test,all]"
# SpikingJelly is the reference client. Its wheel declares torchvision/torchaudio,
# which are huge and unused: install it without them, plus what its monitor imports.
pip install -q --no-deps "spikingjelly==2.0.0"
pip install -q loguru tensorboard
