"""The main job runs end to end and records what it says it records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import spikestore

ROOT = Path(__file__).resolve().parent.parent


def test_demo_trains_and_records_every_layer(tmp_path):
    out = tmp_path / "demo.zarr"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--epochs", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "output/2" in proc.stdout and "total" in proc.stdout
    run = spikestore.open(out)
    assert set(run.streams) == {f"{q}/{layer}" for q in ("output", "v_seq", "grad_input") for layer in ("2", "4")}
    steps = -(-1347 // 64)  # 75% of sklearn's 1797 digits, batch 64
    for key in run.streams:
        s = run[key]
        assert len(s) == steps and s.steps.tolist() == list(range(steps))
    spikes = run["output/2"]
    assert spikes.segments[0].encoding == "bits" and spikes[0].shape == (8, 64, 128)
    assert set(np.unique(spikes[0])) <= {0.0, 1.0}
    assert run["v_seq/2"].segments[0].encoding == "raw"
    assert run["grad_input/4"][0].shape == () and np.isfinite(run["grad_input/4"][:]).all()
    assert run.metadata["T"] == 8 and run.writer["status"] == "closed"
