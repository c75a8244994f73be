#!/usr/bin/env bash
# The one command that proves the CUDA path (docs/cuda.md):
#
#     bash tools/gpu_check.sh            # on a GPU machine, from a clean checkout
#     bash tools/gpu_check.sh --dry-run  # anywhere: the same steps on the CPU, tiny sizes
#
# It makes sure .venv holds a CUDA build of torch: the GPU image's own (python3
# whose torch sees the GPU: used through a venv that sees its packages), else
# torch 2.13.0 from the default index of the machine's pip (TORCH_INDEX_URL to
# choose another; a CPU-only torch already in .venv is replaced). It installs
# the rest from ./.whl when that folder is there (made by tools/gpu_wheels.sh
# where pip works, for a machine that reaches no registry), else with
# tools/setup.sh. Then tools/gpu_check.py: the CUDA tests, the sync count and
# the GPU benchmark, and one table of figures (also written to
# $OUT/gpu_check.txt when OUT is set, else build/gpu_check/). Unattended;
# under 8 minutes on one GPU. On a bare image where Triton cannot compile,
# SJ_LIF_CUDA_IMPLEMENTATION=torch makes SpikingJelly use its plain kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
say() { printf '[gpu_check] %s\n' "$*" >&2; }
dry=0
for a in "$@"; do [ "$a" = "--dry-run" ] && dry=1; done
start=$(date +%s)

# (the dry run takes the same path with any torch, so that it can be rehearsed without a GPU)
gpu_torch() { "$1" -W ignore -c "import sys, torch; sys.exit(0 if $dry or torch.cuda.is_available() else 1)" 2>/dev/null; }
has_cuda_build() { .venv/bin/python -W ignore -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; }

# 1. Python and torch. A GPU image's own python3 whose torch already sees the GPU is
#    used as it is, through a venv that sees its packages: such machines often reach
#    no package registry, and their torch is the one built for their driver.
if [ ! -x .venv/bin/python ]; then
    if gpu_torch "$PY"; then
        say "using $PY's own torch ($("$PY" -W ignore -c 'import torch; print(torch.__version__)')) through a venv that sees its packages"
        "$PY" -m venv .venv
        # A .pth file, not --system-site-packages: that would show the base interpreter's
        # packages, and an image's python3 is often a venv of its own (its torch lives there).
        "$PY" -c 'import site, sys; print("\n".join(site.getsitepackages()))' \
            > "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_gpu_image.pth"
    else
        say "creating .venv with $("$PY" --version 2>&1)"
        "$PY" -m venv .venv
    fi
fi

# 2. Without a registry: the wheels tools/gpu_wheels.sh put in ./.whl (carried along), and
#    only what the CUDA check needs (not tools/setup.sh's test and export extras).
if [ -d .whl ] && ls .whl/spikestore-*.whl >/dev/null 2>&1; then
    say "installing spikestore and what the CUDA check needs from ./.whl (no network used)"
    .venv/bin/python -m pip install -q --no-index --find-links .whl --no-deps spikingjelly
    .venv/bin/python -m pip install -q --no-index --find-links .whl --force-reinstall --no-deps spikestore
    .venv/bin/python -m pip install -q --no-index --find-links .whl spikestore loguru hypothesis pytest psutil \
        || { say "FAILED: ./.whl lacks something this machine does not have (the lines above name it); add it to tools/gpu_wheels.sh"; exit 2; }
    if [ "$dry" = 0 ] && ! has_cuda_build; then
        say "FAILED: no CUDA build of torch in .venv and no registry to fetch one: run on the GPU image's python3 (PYTHON=...)"
        exit 2
    fi
else
    # 3. With a registry: a CUDA torch 2.13.0 from pip's index (a local CPU wheel, e.g. through
    #    PIP_FIND_LINKS, would satisfy ==2.13.0 too: it is ruled out on a second try), then setup.sh.
    if [ "$dry" = 0 ] && ! has_cuda_build; then
        if .venv/bin/python -c 'import torch' 2>/dev/null; then
            say "replacing the CPU-only torch in .venv (pip would count 2.13.0+cpu as 2.13.0 and keep it)"
            .venv/bin/python -m pip uninstall -q -y torch
        fi
        say "installing torch==2.13.0 from pip's index (the CUDA build on a GPU machine)"
        .venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
            || { say "FAILED: pip could not install torch (no registry here? then run bash tools/gpu_wheels.sh where pip works and carry ./.whl)"; exit 2; }
        if ! has_cuda_build; then
            say "pip picked a CPU-only build; again without local wheel folders (PIP_FIND_LINKS)"
            .venv/bin/python -m pip uninstall -q -y torch
            env -u PIP_FIND_LINKS .venv/bin/python -m pip install -q --no-cache-dir "torch==2.13.0" \
                ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
        fi
    fi
    bash tools/setup.sh
fi
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
