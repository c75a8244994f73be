"""The main job runs end to end and records what it says it records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spikestore

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # runs tools/demo.py and the commands it prints in subprocesses


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One run of the main job (it trains for ~20 s), shared by the tests below."""
    out = tmp_path_factory.mktemp("demo") / "demo.zarr"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--epochs", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_demo_trains_and_records_every_layer(demo):
    out, proc = demo
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


def test_demo_explains_its_table_and_points_to_working_next_steps(demo):
    out, proc = demo
    text = proc.stdout
    # the legend names every column and explains the marks the table shows
    legend = text[text.index("What the columns mean:"):]
    for column in ("records", "steps", "record shape", "dtype", "encoding", "on disk", "data vs float32"):
        assert f"\n  {column} " in legend, column
    assert "(+k)" in legend and "8x3x128" in legend  # the (+1) of output/2: the last, smaller batch
    assert "bits: spikes" in legend and "over 100%" in legend and "657%" in legend
    # the next commands, and the docs to read
    commands = [line.strip() for line in text.splitlines() if line.startswith("  spikestore ")]
    kinds = {c.split()[1] for c in commands}
    assert kinds == {"info", "plot", "export"} and all(str(out) in c for c in commands)
    assert any(c.endswith(".nwb") for c in commands)
    for doc in ("docs/tutorial.md", "docs/reading.md", "docs/cli.md"):
        assert doc in text and (ROOT / doc).exists()
    # each printed command works on the store the demo wrote
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    results = [subprocess.run(c, shell=True, capture_output=True, text=True, timeout=300, env=env)
               for c in commands]
    for command, r in zip(commands, results, strict=True):
        assert r.returncode == 0, (command, r.stderr)
    assert "output/2" in results[0].stdout and "writer     closed" in results[0].stdout
    folder = out.parent
    assert len(list(folder.glob("demo_*.png"))) == 4
    assert (folder / "demo.nwb").stat().st_size > 0 and (folder / "demo_spikes.npz").stat().st_size > 0
