#!/usr/bin/env bash
# The one command that proves the CUDA path (issue #18, docs/cuda.md):
#
#     bash tools/gpu_check.sh            # on a GPU machine, from a clean checkout
#     bash tools/gpu_check.sh --dry-run  # anywhere: the same steps on the CPU, tiny sizes
#
# It makes sure .venv holds a CUDA build of torch 2.13.0 (from the default
# index of the machine's pip, which on a GPU machine serves the CUDA build;
# a CPU-only torch already in .venv is replaced), then runs tools/setup.sh
# (which keeps that torch), then tools/gpu_check.py: the CUDA tests, the sync
# count and the GPU benchmark, and one table of figures (also written to
# $OUT/gpu_check.txt when OUT is set, else build/gpu_check/). Unattended;
# under 8 minutes on one GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
say() { printf '[gpu_check] %s\n' "$*" >&2; }
dry=0
for a in "$@"; do [ "$a" = "--dry-run" ] && dry=1; done
start=$(date +%s)

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$PY" --version 2>&1)"
    "$PY" -m venv .venv
fi
has_cuda_build() { .venv/bin/python -W ignore -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; }
if [ "$dry" = 0 ] && ! has_cuda_build; then
    if .venv/bin/python -c 'import torch' 2>/dev/null; then
        say "replacing the CPU-only torch in .venv (pip would count 2.13.0+cpu as 2.13.0 and keep it)"
        .venv/bin/python -m pip uninstall -q -y torch
    fi
    say "installing torch==2.13.0 from pip's default index (the CUDA build on a GPU machine)"
    .venv/bin/python -m pip install -q "torch==2.13.0"
fi
bash tools/setup.sh
if [ "$dry" = 0 ]; then
    if ! .venv/bin/python -W ignore -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        say "FAILED: torch.cuda.is_available() is False with $(.venv/bin/python -W ignore -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')."
        say "No CUDA proof without a GPU: check nvidia-smi and the driver, or run 'bash tools/gpu_check.sh --dry-run' to check the script itself."
        exit 2
    fi
    say "$(.venv/bin/python -W ignore -c 'import torch; print(torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)')"
fi
set +e
.venv/bin/python tools/gpu_check.py "$@"
rc=$?
set -e
say "done in $(( $(date +%s) - start )) s (exit $rc)"
exit "$rc"
