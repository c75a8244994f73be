#!/usr/bin/env bash
# Set up everything spikestore needs in ./.venv, on a fresh machine.
#
# Idempotent: a second run with an unchanged pyproject.toml only checks that
# everything imports. A torch already installed in .venv is kept (install the
# CUDA or CPU build you want there first; see the README). Otherwise torch
# 2.13.0 comes from whatever index the machine's pip uses, and the script says
# which build that turned out to be.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
STAMP=.venv/.spikestore-setup
stage() { printf '[setup] %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
    stage "creating the virtual environment .venv with $("$PY" --version 2>&1)"
    "$PY" -m venv .venv
fi
. .venv/bin/activate

want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
        && python -c "import spikestore, spikingjelly.activation_based.monitor, torch" 2>/dev/null; then
    stage "already set up ($(python -c 'import torch; print("torch", torch.__version__)')); nothing to install"
    exit 0
fi

stage "upgrading pip"
pip install -q --upgrade pip

torch_build() {
    python -W ignore -c 'import torch; c = torch.version.cuda; print(f"torch {torch.__version__}, " + (f"CUDA {c} build" if c else "CPU-only build"))'
}
if python -c "import torch" 2>/dev/null; then
    stage "keeping the torch already in .venv: $(torch_build)"
else
    # Pinned and installed first: left to spikestore's own `torch>=2.4`, pip
    # would pick the newest build, which on most indexes is a multi-GB CUDA one.
    stage "installing torch 2.13.0 from pip's configured index (can take minutes on a slow link)"
    pip install -q "torch==2.13.0"
    stage "installed $(torch_build)"
fi

# SpikingJelly's wheel declares torchvision/torchaudio, huge and unused here:
# it goes in last with --no-deps (what its monitor imports, loguru and
# tensorboard, come with the test extra). Removing it before the other
# installs keeps pip from reporting its undeclared dependencies as conflicts.
for pkg in spikingjelly norse; do
    if python -c "import $pkg" 2>/dev/null; then
        pip uninstall -q -y "$pkg"
    fi
done
stage "installing spikestore (editable) with its extras and test tools"
pip install -q -e ".[test,all]"
stage "installing the reference client SpikingJelly 2.0.0 (without torchvision/torchaudio)"
pip install -q --no-deps "spikingjelly==2.0.0"
# Norse declares torchvision, which would replace the torch above with a CUDA build of
# another version: it goes in without its dependencies (nir and nirtorch come with the test extra).
stage "installing the client Norse 1.1.0 (without torchvision)"
pip install -q --no-deps "norse==1.1.0"

python -c "import spikestore, spikingjelly.activation_based.monitor, norse.torch" \
    || { stage "set-up finished but spikestore, SpikingJelly or Norse does not import; see the errors above"; exit 1; }
echo "$want" > "$STAMP"
stage "done: $(torch_build), spikestore $(python -c 'import spikestore; print(spikestore.__version__)') in .venv"
