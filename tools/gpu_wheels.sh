#!/usr/bin/env bash
# Wheels for a GPU machine that cannot reach a package registry (docs/cuda.md §5).
#
#     bash tools/gpu_wheels.sh                 # here, where pip works
#     PYVER=3.12 bash tools/gpu_wheels.sh      # the GPU machine's Python (default 3.12)
#
# A GPU image usually brings Python with a CUDA build of torch, numpy, numba,
# pytest and psutil, but not zarr, SpikingJelly or spikestore itself. This puts
# into ./.whl (ignored by git) spikestore's own wheel and, for CPython $PYVER on
# manylinux x86-64, the wheels of what the CUDA check needs beyond such an
# image; tools/gpu_check.sh installs from ./.whl without a network when the
# folder is there. The folder stays well under the 64 MiB a copy of the
# working tree may carry (the size is printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PYVER=${PYVER:-3.12}
export PIP_DISABLE_PIP_VERSION_CHECK=1
say() { printf '[gpu_wheels] %s\n' "$*" >&2; }

# What spikestore's core and the CUDA tests import that a GPU image may lack, with
# their own requirements (pip download --no-deps fetches none of those by itself).
NEEDED=(zarr numcodecs donfig google-crc32c pcodec jsonschema jsonschema-specifications referencing
        rpds-py typing-extensions attrs packaging ml-dtypes loguru "spikingjelly==2.0.0" hypothesis sortedcontainers)

# The versions the tests ran with here (.venv, made by tools/setup.sh), where there is one.
if [ -x .venv/bin/python ]; then
    mapfile -t NEEDED < <(.venv/bin/python - "${NEEDED[@]}" <<'PYEOF'
import sys
from importlib import metadata
for want in sys.argv[1:]:
    name = want.split("==")[0]
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(want)
PYEOF
)
fi

rm -rf .whl && mkdir -p .whl
say "building spikestore's wheel"
"$PY" -m pip wheel -q --no-deps -w .whl .
say "downloading ${#NEEDED[@]} wheels for CPython $PYVER, manylinux x86-64"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${platforms[@]}" -d .whl "${NEEDED[@]}"
say "done: $(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in ./.whl"
say "with the device tool, carry it: run(command='bash tools/gpu_check.sh', carry=['.whl'])"
