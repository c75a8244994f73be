"""A reader-only install: reading, analysis, export, the CLI's read commands and the
xarray engine work in a virtual environment that has neither torch nor numba.

``pip install 'spikestore[xarray,hdf5,cli,...]'`` installs no torch and no numba (they are the
``record`` extra). The test builds a fresh venv whose site-packages holds everything this
project's venv has (links, no network) except torch, numba and llvmlite, runs the read side
there on the committed fixture stores, and checks that neither library was imported (nor could be).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "stores"
#: What a reader-only install lacks: the ``record`` extra and what only it brings.
LEFT_OUT = ("torch", "functorch", "torchgen", "numba", "llvmlite", "spikingjelly")

SCRIPT = r'''
import sys, importlib, importlib.util
for name in ("torch", "numba", "llvmlite"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed in the reader-only venv"
from pathlib import Path
import numpy as np
import xarray as xr
from click.testing import CliRunner
import spikestore
from spikestore import analysis, export
from spikestore.cli import main

out = Path(sys.argv[1])
for path in sys.argv[2:]:
    run = spikestore.open(path)
    for key in run.streams:
        s = run[key]
        for chunk in s.iter_chunks():
            chunk.values.sum()
        s.padded[:] if s.batch_sizes is not None else None
    spikes = run["output/fc"]
    spikes.dims = ("time", "batch", "neuron")
    analysis.firing_rate(spikes, "record"); analysis.spike_counts(spikes, "step")
    analysis.population_rate(spikes); analysis.inter_spike_intervals(run["output/sn"])
    analysis.firing_rate(run, "step"); analysis.grad_norms(run)
    assert float(spikes.to_dask().sum().compute()) == float(sum(c.values.sum() for c in spikes.iter_chunks()))
    xr.open_dataset(path, engine="spikestore").load()
    name = Path(path).suffix[1:]
    real = [k for k in run.streams if k != "output/complex"]  # (Parquet has no complex type)
    for fmt in ("npz", "hdf5", "parquet", "nwb"):
        export.export(run, out / f"{name}-api.{fmt}", format=fmt, streams=real)
    cli = CliRunner()
    for args in (["info", path], ["verify", path], ["export", path, str(out / f"{name}-cli.npz")],
                 ["plot", path, "--kind", "rates", "--out", str(out / f"{name}.png")],
                 ["plot", path, "--kind", "raster", "--stream", "output/fc", "--out", str(out / f"{name}-r.png")]):
        res = cli.invoke(main, args)
        assert res.exit_code == 0, (args, res.output, res.exception)
    run.close()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numba", "llvmlite"))
assert not loaded, loaded
# What needs torch says which extra to install, as a SpikestoreError.
for modname in ("spikestore.monitor", "spikestore.tensor_cache"):
    try:
        importlib.import_module(modname)
    except spikestore.MissingDependencyError as exc:
        assert "spikestore[record]" in str(exc), exc
    else:
        raise AssertionError(f"{modname} imported without torch")
run = spikestore.open(sys.argv[2])
try:
    run[run.streams[0]].tensor(0)
except spikestore.MissingDependencyError as exc:
    assert "spikestore[record]" in str(exc), exc
else:
    raise AssertionError("Stream.tensor() worked without torch")
print("reader-only OK")
'''


def _reader_venv(where: Path) -> Path:
    """A venv at ``where`` whose site-packages links every entry of this one's but :data:`LEFT_OUT`."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    mine = Path(sysconfig.get_paths()["purelib"])
    theirs = Path(subprocess.run([str(where / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    for entry in mine.iterdir():
        base = entry.name.split("-")[0].split(".")[0].lower()
        if base in LEFT_OUT or entry.name.startswith("__pycache__"):
            continue
        target = theirs / entry.name
        if not target.exists():
            target.symlink_to(entry, target_is_directory=entry.is_dir())
    return where / "bin" / "python"


def test_the_core_dependencies_leave_out_torch_and_numba():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    names = " ".join(project["dependencies"] + extras["xarray"] + extras["distributed"] + extras["hdf5"]
                     + extras["cli"] + extras["plot"])
    assert "torch" not in names and "numba" not in names
    assert any(d.startswith("torch") for d in extras["record"]) and any(d.startswith("numba") for d in extras["record"])
    assert "record" in extras["all"][0]


@pytest.mark.slow  # spawns processes
@pytest.mark.skipif(sys.platform == "win32", reason="symlinked site-packages")
def test_reading_analysis_export_cli_and_xarray_without_torch_or_numba(tmp_path):
    started = time.perf_counter()
    python = _reader_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MPLBACKEND"] = "Agg"
    (tmp_path / "check.py").write_text(SCRIPT, encoding="utf-8")
    res = subprocess.run([str(python), str(tmp_path / "check.py"), str(tmp_path),
                          str(FIXTURES / "v1.zarr"), str(FIXTURES / "v1.h5")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reader-only OK" in res.stdout
    print(f"reader-only venv built and checked in {time.perf_counter() - started:.1f} s")
