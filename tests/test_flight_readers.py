"""A flight-recorded store reads as an ordinary store with gaps in its steps, on every reader path;
SpikingJelly monitors, CUDA records (stood in on the CPU), ranks, URLs and SIGKILL (docs/flight-recorder.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import record_as_ranks
from test_cuda_path import fake_cuda, plain  # noqa: F401 - fake_cuda is a fixture these tests use
from test_flight_recorder import assert_kept, bits, mixed, record, spikes, windows

import spikestore
from spikestore import FlightRecorder

MARKS = {6: "a", 9: "b", 25: "c"}
KEPT = windows(MARKS, 2, 1)  # 4..10, 23..26


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    """A flight-recorded store and a plain one of the same inputs."""
    d = tmp_path_factory.mktemp("fr")
    record(d / "f.zarr", range(30), mixed, marks=MARKS, rec=FlightRecorder(2, 1, triggers=()))
    record(d / "p.zarr", range(30), mixed)
    return d / "f.zarr", d / "p.zarr"


def _take(plain: spikestore.Stream) -> np.ndarray:
    return np.flatnonzero(np.isin(plain.steps, sorted(KEPT)))


def test_indexing_and_sel_see_the_kept_steps(stores):
    f, p = (spikestore.open(s) for s in stores)
    for key in ("output/1", "v/1", "b/1", "n/1"):
        fs, ps = f[key], p[key]
        take = _take(ps)
        assert len(fs) == len(take) == len(KEPT)
        assert np.array_equal(bits(fs[-1]), bits(ps[take[-1]]))
        assert np.array_equal(bits(fs[[0, 3, -2]]), bits(ps[take[[0, 3, -2]]]))
        assert np.array_equal(bits(fs[2:7:2]), bits(ps[take[2:7:2]]))
        assert np.array_equal(bits(fs.sel(24)), bits(ps.sel(24)))
        assert np.array_equal(bits(fs.sel(slice(0, 8))), bits(ps.sel(slice(4, 8))))  # steps 4..8 exist
        with pytest.raises(spikestore.SpikestoreError, match="15"):
            fs.sel(15)  # a gap: as a step that was never recorded
        assert np.array_equal(bits(fs.to_dask().compute()), bits(ps[take]))


def test_xarray_sees_the_gaps_as_step_coordinates(stores):
    import xarray as xr

    ds = xr.open_dataset(stores[0], engine="spikestore")
    ref = spikestore.open(stores[1])
    assert sorted(set(ds["v/1:step"].values.tolist())) == sorted(KEPT)
    np.testing.assert_array_equal(ds["v/1"].values, ref["v/1"][_take(ref["v/1"])])
    ds.close()


def test_analysis_export_info_and_the_live_summary_read_it(stores, tmp_path):
    from click.testing import CliRunner

    from spikestore import analysis
    from spikestore.cli import main
    from spikestore.export import export
    from spikestore.live import Follower

    f, p = (spikestore.open(s) for s in stores)
    take = _take(p["output/1"])
    np.testing.assert_array_equal(analysis.firing_rate(f["output/1"], "record"),
                                  analysis.firing_rate(p["output/1"], "record")[take])
    np.testing.assert_array_equal(analysis.spike_counts(f["output/1"], "record"),
                                  analysis.spike_counts(p["output/1"], "record")[take])
    out = export(f, tmp_path / "x.npz")
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["v/1.steps"], sorted(KEPT))
        np.testing.assert_array_equal(z["v/1"], p["v/1"][take])
    result = CliRunner().invoke(main, ["info", str(stores[0])])
    assert result.exit_code == 0, result.output
    row = next(line.split() for line in result.output.splitlines() if line.startswith("output/1 "))
    assert row[1:3] == [str(len(KEPT)), f"{min(KEPT)}..{max(KEPT)}"]
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("triggers "))
    assert lines[at] == f"triggers   {len(MARKS)}"
    assert [line.split(":", 1)[0].split()[-1] for line in lines[at + 1:at + 1 + len(MARKS)]] == \
        [str(step) for step in MARKS]
    assert lines[at - 1].startswith("flight     kept steps s-2..s+1 around each trigger")
    plain = CliRunner().invoke(main, ["info", str(stores[1])])
    assert "triggers" not in plain.output and "flight " not in plain.output
    with Follower(f) as follower:
        snap = follower.refresh()
        s = snap.streams["output/1"]
        assert s.records == len(KEPT) and s.last_step == max(KEPT)


def test_kept_records_match_spikingjelly_monitors_at_their_steps(tmp_path):
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based import monitor as sj

    from spikestore import monitor as ss

    torch.manual_seed(0)
    net = torch.nn.Sequential(layer.Linear(8, 16), neuron.LIFNode(tau=2.0, store_v_seq=True), layer.Linear(16, 4),
                              neuron.LIFNode(tau=2.0, store_v_seq=True))
    functional.set_step_mode(net, "m")
    with torch.no_grad():
        net[0].weight.mul_(2)
        net[2].weight.mul_(4)
    ref = sj.OutputMonitor(net, neuron.LIFNode)
    vref = sj.AttributeMonitor("v_seq", False, net, neuron.LIFNode)
    g = torch.Generator().manual_seed(3)
    rec = FlightRecorder(before=2, after=2, triggers=("silent",))
    with spikestore.Store(tmp_path / "f.zarr", flight_recorder=rec) as store:
        ss.OutputMonitor(net, neuron.LIFNode, store=store)
        ss.AttributeMonitor("v_seq", False, net, neuron.LIFNode, store=store)
        for step in range(14):
            store.set_step(step)
            scale = 0.0 if step == 10 else 6.0  # no input at step 10: silent layers
            with torch.no_grad():
                net(torch.rand(4, 3, 8, generator=g) * scale)
            functional.reset_net(net)
            if step == 3:
                store.trigger("look")
    run = spikestore.open(tmp_path / "f.zarr")
    assert {"step": 3, "reason": "look", "stream": None} in run.triggers
    assert ("silent", 10) in {(t["reason"], t["step"]) for t in run.triggers}
    kept = sorted(windows([3, 10], 2, 2))
    for name in ("1", "3"):
        assert run[f"output/{name}"].steps.tolist() == kept
        want = np.stack([ref[name][s].numpy() for s in kept])
        assert np.array_equal(run[f"output/{name}"][:], want)
        vwant = np.stack([vref[name][s].numpy() for s in kept])
        assert np.array_equal(bits(run[f"v_seq/{name}"][:]), bits(vwant))
    assert run["output/1"].selection is not None and run["output/1"].attrs["monitor"] == "OutputMonitor"


def test_cuda_records_carry_the_finite_flag_from_the_device(tmp_path, fake_cuda, monkeypatch):  # noqa: F811
    """With ``nonfinite`` armed, a stand-in CUDA record's device-side flag decides; the host never looks."""
    from spikestore._write import flight_checks
    from spikestore._write.capture import _capture_cuda
    from spikestore._write.cuda import CudaCapture

    def host_check(p):
        raise AssertionError("a CUDA record's finite check runs on the device")

    monkeypatch.setattr(flight_checks, "is_nonfinite", host_check)
    records = [("v/f32", torch.tensor([[1.0, 2.0], [3.0, float("nan")]])),
               ("v/bf16", torch.tensor([0.5, float("inf")]).bfloat16()),
               ("v/f16", torch.tensor([0.5, 2.0], dtype=torch.float16)),
               ("output/s", (torch.rand(3, 16) < 0.5).float()),
               ("v/c64", torch.tensor([1 + 1j, complex(0, float("-inf"))], dtype=torch.complex64))]
    device = CudaCapture(1 << 20, allocate=plain, check_finite=True)
    with spikestore.Store(tmp_path / "s.zarr", flight_recorder=FlightRecorder(0, 0)) as store:
        for step, (key, t) in enumerate(records):
            frame = _capture_cuda(key, t, step, 0, 0.0, str(t.dtype).removeprefix("torch."), tuple(t.shape),
                                  "auto", device)
            assert frame.inflight.finite_at is not None  # every record here is float or complex
            assert store._writer.submit(frame)
        store.flush()
    run = spikestore.open(tmp_path / "s.zarr")
    assert [(t["step"], t["stream"]) for t in run.triggers] == [(0, "v/f32"), (1, "v/bf16"), (4, "v/c64")]
    assert run.streams == ["v/f32", "v/bf16", "v/c64"]
    np.testing.assert_array_equal(run["v/f32"][0], records[0][1].numpy())


def test_without_a_flight_recorder_cuda_records_carry_no_flag(fake_cuda):  # noqa: F811
    from spikestore._write.capture import _capture_cuda
    from spikestore._write.cuda import CudaCapture

    t = torch.tensor([1.0, float("nan")])
    frame = _capture_cuda("v/1", t, 0, 0, 0.0, "float32", (2,), "auto", CudaCapture(1 << 20, allocate=plain))
    assert frame.inflight.finite_at is None
    frame.inflight.finish()
    assert frame.inflight.nonfinite is None


def test_a_trigger_on_one_rank_keeps_that_ranks_window_alone(tmp_path, monkeypatch):
    def rank_record(store: spikestore.Store, r: int) -> None:
        for step in range(12):
            store.set_step(step)
            v = np.full(3, 10.0 * r + step, np.float32)
            if r == 1 and step == 5:
                v[0] = np.nan
            store.append("v/a", v)
            store.append("output/a", spikes(100 * r + step))
            if step == 9:
                store.trigger("every rank")

    path = tmp_path / "run.zarr"
    record_as_ranks(path, monkeypatch, rank_record, flight_recorder=FlightRecorder(1, 1))
    run = spikestore.open(path)
    assert run.triggers == [{"step": 5, "reason": "nonfinite", "stream": "v/a", "rank": 1},
                            {"step": 9, "reason": "every rank", "stream": None, "rank": 0},
                            {"step": 9, "reason": "every rank", "stream": None, "rank": 1}]
    assert run.rank(0)["v/a"].steps.tolist() == [8, 9, 10]
    assert run.rank(1)["v/a"].steps.tolist() == [4, 5, 6, 8, 9, 10]
    assert run.rank(1).triggers[0] == {"step": 5, "reason": "nonfinite", "stream": "v/a"}
    s = run["v/a"]
    np.testing.assert_array_equal(s[:, 1], [10 * r + step for step, r in zip(s.steps, s.ranks, strict=True)])
    assert spikestore.verify(path) == []


def test_a_store_behind_a_url_keeps_its_windows(tmp_path, url):
    record(url, range(30), mixed, marks=MARKS, rec=FlightRecorder(2, 1, triggers=()))
    record(tmp_path / "p.zarr", range(30), mixed)
    run = spikestore.open(url)
    assert [t["step"] for t in run.triggers] == list(MARKS)
    ref = spikestore.open(tmp_path / "p.zarr")
    for key in ref.streams:
        take = _take(ref[key])
        assert run[key].steps.tolist() == ref[key].steps[take].tolist()
        assert np.array_equal(bits(run[key][:]), bits(ref[key][take]))


KILLED = textwrap.dedent("""
    import os, signal, sys, numpy as np, spikestore
    sys.path.insert(0, sys.argv[2])
    from test_flight_recorder import mixed
    store = spikestore.Store(sys.argv[1], flush_interval=3600.0,
                             flight_recorder=spikestore.FlightRecorder(2, 1, triggers=()))
    for step in range(40):
        store.set_step(step)
        for key, value in mixed(step).items():
            store.append(key, value)
        if step == 10:
            store.trigger("flushed")
        if step == 12:
            store.flush()             # the window 8..11 is written and committed
        if step == 30:
            store.trigger("lost")     # its window waits in the ring and the writer: not committed
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["zarr", "h5"])
def test_sigkill_after_a_flush_leaves_the_flushed_window_readable(tmp_path, suffix):
    script = tmp_path / "w.py"
    script.write_text(KILLED)
    path = tmp_path / f"f.{suffix}"
    proc = subprocess.run([sys.executable, str(script), str(path), str(Path(__file__).parent)], check=False,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL
    record(tmp_path / f"p.{suffix}", range(40), mixed)
    run = spikestore.open(path)
    assert run.writer["status"] == "open"
    assert run.triggers == [{"step": 10, "reason": "flushed", "stream": None}]
    assert_kept(path, tmp_path / f"p.{suffix}", windows([10], 2, 1))
    assert spikestore.verify(path) == []
