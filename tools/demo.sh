#!/usr/bin/env bash
# Set up (tools/setup.sh), then run the main job: train a spiking network on
# scikit-learn's digits and record it to runs/demo.zarr. Arguments go to tools/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
. .venv/bin/activate
python tools/demo.py "$@"
