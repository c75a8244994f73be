"""One run recorded by every rank of a process group (docs/format.md §1.2, docs/reading.md).

Two gloo ranks, spawned with ``torch.multiprocessing``, each train a
DDP-wrapped SpikingJelly network with spikestore's monitor and SpikingJelly's
own beside it, on one store path; the parent reopens the run and compares
every rank's records with that rank's SpikingJelly records, bit for bit.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from helpers import DDP_LAYERS, ddp_spiking_net, ddp_step, rank_records, record_as_ranks, save_rank_records, spawn_ranks
from spikingjelly.activation_based import monitor as sj
from spikingjelly.activation_based import neuron

import spikestore
from spikestore import monitor as ss

STEPS = 6


def _train(rank: int, world: int, path: str, out: str, kill_after: int | None) -> None:
    """One rank: train a DDP network for STEPS steps, recording with both monitors.

    With ``kill_after``, rank 1 flushes after that step, records the rest
    without committing, and SIGKILLs itself once rank 0 has closed its part.
    """
    net, model, opt = ddp_spiking_net()
    store = spikestore.Store(path, mode="w", flush_interval=3600.0)
    ref = sj.OutputMonitor(net, neuron.LIFNode)
    mon = ss.OutputMonitor(net, neuron.LIFNode, store=store)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    for step in range(STEPS):
        store.set_step(step)
        ddp_step(net, model, opt, g)
        if rank == 1 and step == kill_after:
            store.flush()
    save_rank_records(ref, rank, out)
    if rank == 1 and kill_after is not None:
        dist.barrier()  # rank 0 has closed its part and saved its records
        os.kill(os.getpid(), signal.SIGKILL)
    mon.close()
    store.close()
    dist.barrier()
    dist.destroy_process_group()


def _spawn(path: Path, out: Path, kill_after: int | None = None) -> list[int | None]:
    """Run the two ranks; their exit codes."""
    return spawn_ranks(_train, out, str(path), str(out), kill_after)


@pytest.mark.slow  # spawns processes
def test_two_ddp_ranks_record_one_run_bit_exact(tmp_path):
    path = tmp_path / "run.zarr"
    assert _spawn(path, tmp_path) == [0, 0]
    run = spikestore.open(path)
    assert run.ranks == [0, 1] and run.doc["format_version"] == 3
    assert sorted(run.streams) == [f"output/{n}" for n in DDP_LAYERS]
    for name in DDP_LAYERS:
        key = f"output/{name}"
        refs = {r: rank_records(tmp_path, r, name) for r in (0, 1)}
        assert refs[0].any() and not np.array_equal(refs[0], refs[1])  # spikes; each rank its own data
        for r in (0, 1):
            part = run.rank(r)
            assert part.ranks == [r] and part.writer["status"] == "closed"
            s = part[key]
            assert len(s) == STEPS and (s.ranks == r).all()
            np.testing.assert_array_equal(s[:], refs[r])
        merged = run[key]
        assert len(merged) == 2 * STEPS
        np.testing.assert_array_equal(merged.steps, np.repeat(np.arange(STEPS), 2))  # by step, then rank
        np.testing.assert_array_equal(merged.ranks, np.tile([0, 1], STEPS))
        values = merged[:]
        for i, (r, step) in enumerate(zip(merged.ranks, merged.steps, strict=True)):
            np.testing.assert_array_equal(values[i], refs[int(r)][step])
            np.testing.assert_array_equal(merged[i], refs[int(r)][step])
        np.testing.assert_array_equal(merged.sel(2, rank=1), refs[1][2])
        np.testing.assert_array_equal(merged.to_dask().compute(), values)
        da = merged.to_xarray()
        np.testing.assert_array_equal(da["rank"].values, merged.ranks)


@pytest.mark.slow  # spawns processes
def test_a_killed_rank_leaves_the_others_and_its_committed_prefix(tmp_path):
    path = tmp_path / "run.zarr"
    flushed_after = 2  # rank 1 commits steps 0..2, then dies before committing more
    codes = _spawn(path, tmp_path, kill_after=flushed_after)
    assert codes == [0, -signal.SIGKILL]
    run = spikestore.open(path)
    assert run.ranks == [0, 1]
    assert run.rank(0).writer["status"] == "closed" and run.rank(1).writer["status"] == "open"
    for name in DDP_LAYERS:
        key = f"output/{name}"
        np.testing.assert_array_equal(run.rank(0)[key][:], rank_records(tmp_path, 0, name))
        killed = run.rank(1)[key]
        n = len(killed)
        assert flushed_after + 1 <= n <= STEPS
        np.testing.assert_array_equal(killed[:], rank_records(tmp_path, 1, name)[:n])
        assert len(run[key]) == STEPS + n


def test_a_one_process_store_is_rank_zero_and_unchanged(tmp_path):
    path = tmp_path / "one.zarr"
    with spikestore.Store(path, mode="w") as store:
        for step in range(3):
            store.set_step(step)
            store.append("output/a", np.ones((2, 3), np.float32))
    run = spikestore.open(path)
    assert run.ranks == [0] and run.rank(0) is run
    assert "ranks" not in run.doc and run.doc["format_version"] == 2
    s = run["output/a"]
    assert s.ranks.tolist() == [0, 0, 0] and s.ranks.dtype == np.int64
    assert sorted(p.name for p in path.iterdir()) == ["output", "zarr.json"]  # no part folders
    with pytest.raises(spikestore.SpikestoreError, match="no rank 1"):
        run.rank(1)


def test_hdf5_inside_a_process_group_names_zarr(tmp_path, monkeypatch):
    from spikestore._write import group as ranks

    monkeypatch.setattr(ranks, "group_rank", lambda: (0, 2))
    with pytest.raises(spikestore.SpikestoreError, match="Zarr"):
        spikestore.Store(tmp_path / "run.h5", mode="w")
    assert not (tmp_path / "run.h5").exists()


def _record_ranks(path: Path, monkeypatch, mode: str, steps: range, world: int = 2) -> None:
    """Record rank by rank in this process, as ``world`` ranks would (helpers.record_as_ranks)."""

    def record(store: spikestore.Store, r: int) -> None:
        for step in steps:
            store.set_step(step)
            store.append("output/a", np.full((2, 3), 10 * r + step, np.float32))
            if r == 1:
                store.append("only/1", np.int64(step))

    record_as_ranks(path, monkeypatch, record, world=world, mode=mode)


def test_a_ranked_run_reads_as_one_and_resumes(tmp_path, monkeypatch):
    import xarray as xr

    path = tmp_path / "run.zarr"
    _record_ranks(path, monkeypatch, "w", range(3))
    _record_ranks(path, monkeypatch, "a", range(3, 5))
    run = spikestore.open(path)
    assert run.ranks == [0, 1] and run.doc["format_version"] == 3
    assert run.streams == ["output/a", "only/1"] and len(run) == 2 and "only/1" in run
    s = run["output/a"]
    assert s.steps.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and s.ranks.tolist() == [0, 1] * 5
    np.testing.assert_array_equal(s[:, 0, 0], [10 * r + step for step in range(5) for r in (0, 1)])
    np.testing.assert_array_equal(s[[-1, 0]][:, 0, 0], [14, 0])
    assert run["only/1"].ranks.tolist() == [1] * 5 and run.rank(1)["only/1"].ranks.tolist() == [1] * 5
    assert "only/1" not in run.rank(0)
    assert [(r["stream"], r["records"]) for r in run.summary()] == [("output/a", 10), ("only/1", 5)]
    from spikestore import analysis

    rates = analysis.firing_rate(s, "record")  # every rank's chunks, in the merged order
    np.testing.assert_array_equal(rates, [(10 * r + step != 0) for step in range(5) for r in (0, 1)])
    np.testing.assert_array_equal(rates[s.ranks == 1], analysis.firing_rate(run.rank(1)["output/a"], "record"))
    from spikestore import verify

    assert verify(path) == []
    ds = xr.open_dataset(path, engine="spikestore")
    assert ds["output/a:rank"].values.tolist() == [0, 1] * 5
    np.testing.assert_array_equal(ds["output/a"].values, s[:])
    ds.close()
    one = xr.open_dataset(path / "__rank1", engine="spikestore")  # a part is a plain store, marked rank 1
    assert one["output/a:rank"].values.tolist() == [1] * 5
    assert spikestore.open(path / "__rank1").doc["rank"] == 1 and "rank" not in run.doc
    one.close()


def test_ranked_false_records_a_store_of_its_own(tmp_path, monkeypatch):
    from spikestore._write import group as ranks

    def no_meeting(failure):
        raise AssertionError("ranked=False must not meet the other ranks")

    monkeypatch.setattr(ranks, "_broadcast_failure", no_meeting)
    monkeypatch.setattr(ranks, "group_rank", lambda: (1, 2))
    with spikestore.Store(tmp_path / "alone.zarr", mode="w", ranked=False) as store:
        assert store.path == tmp_path / "alone.zarr"
        store.append("output/a", np.zeros(3, np.float32))
    run = spikestore.open(tmp_path / "alone.zarr")
    assert run.ranks == [0] and run.doc["format_version"] == 2


TORCHRUN_SCRIPT = """
import sys
import numpy as np
import torch.distributed as dist
import spikestore

dist.init_process_group("gloo")
rank = dist.get_rank()
with spikestore.Store(sys.argv[1], mode="w") as store:
    for step in range(4):
        store.set_step(step)
        store.append("output/a", np.full(3, 10 * rank + step, np.int16))
dist.destroy_process_group()
"""


@pytest.mark.slow  # spawns processes
def test_torchrun_ranks_record_one_run(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "record.py"
    script.write_text(TORCHRUN_SCRIPT)
    path = tmp_path / "run.zarr"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    run = spikestore.open(path)
    assert run.ranks == [0, 1]
    s = run["output/a"]
    assert s.ranks.tolist() == [0, 1] * 4
    np.testing.assert_array_equal(s[:, 0], [10 * r + step for step in range(4) for r in (0, 1)])


def test_verify_reports_a_damaged_part_by_rank(tmp_path, monkeypatch):
    from spikestore import verify

    path = tmp_path / "run.zarr"
    _record_ranks(path, monkeypatch, "w", range(3))
    chunk = next(p for p in (path / "__rank1" / "output").rglob("c*") if p.is_file() and "seg" in str(p))
    chunk.write_bytes(b"garbage")
    problems = verify(path)
    assert problems and all(line.startswith("rank 1: ") for line in problems)


def test_a_rank_that_has_not_opened_yet_is_left_out_until_refresh(tmp_path, monkeypatch):
    from spikestore._write import group as ranks

    path = tmp_path / "run.zarr"
    monkeypatch.setattr(ranks, "_broadcast_failure", lambda failure: failure)
    monkeypatch.setattr(ranks, "group_rank", lambda: (0, 2))
    with spikestore.Store(path, mode="w") as store:
        store.append("output/a", np.zeros(3, np.float32))
    run = spikestore.open(path)
    assert run.ranks == [0, 1] and run.streams == ["output/a"]
    s = run["output/a"]
    assert s.ranks.tolist() == [0]
    with pytest.raises(spikestore.StoreNotFoundError):
        run.rank(1)
    monkeypatch.setattr(ranks, "group_rank", lambda: (1, 2))
    with spikestore.Store(path, mode="w") as store:
        store.append("output/a", np.ones(3, np.float32))
        store.append("output/b", np.ones(3, np.float32))
    run.refresh()
    assert s.ranks.tolist() == [0, 1] and s[1].tolist() == [1, 1, 1]
    assert run.streams == ["output/a", "output/b"] and run.rank(1).ranks == [1]
