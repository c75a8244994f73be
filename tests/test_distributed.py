"""spikestore.analysis and Stream.to_dask() on a dask.distributed cluster.

A LocalCluster of two worker processes on loopback: the answers equal
numpy's and the single-process ones (computed before the client starts),
the tasks ran on the workers, each worker opened the store itself, and a
task carries a reference to its block, never the chunk.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from helpers import M_SEL, S_SEL, record_as_ranks

import spikestore
from spikestore import analysis
from spikestore._integrations.distributed import BlockRef, active_client
from spikestore._read.run import open_runs

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask.array")


STEPS, T = 12, 4
DIMS = ("time", "batch", "neuron")
SUFFIXES = ("zarr", "h5")


def _write(path, steps=range(STEPS), mode="w"):
    """Multi-step spikes with a smaller last batch, single-step spikes (several records a step) and
    gradients, in small chunks (many tasks); returns what was written."""
    with spikestore.Store(path, mode=mode, chunk_bytes=400) as store:
        return _write_into(store, steps)


def _write_into(store, steps):
    """What :func:`_write` records, into an open store."""
    rng = np.random.default_rng(7 + steps.start)
    data: dict[str, list[tuple[int, np.ndarray]]] = {}
    store.set_stream_info("output/a", selection=M_SEL)
    store.set_stream_info("output/s", selection=S_SEL)
    for step in steps:
        store.set_step(step)
        batch = 3 if step == STEPS - 1 else 6
        recs = {"output/a": [(rng.random((T, batch, 20)) < 0.04 * (1 + step % 5)).astype(np.float32)],
                "output/s": [(rng.random((batch, 9)) < 0.3).astype(np.float32) for _ in range(T)],
                "grad_input/a": [rng.standard_normal((2, 5)).astype(np.float32)]}
        for key, values in recs.items():
            for v in values:
                store.append(key, v)
                data.setdefault(key, []).append((step, v))
    return data


def _answers(run):
    """Every analysis result and to_dask() sum, as plain numpy values."""
    a, s = run["output/a"], run["output/s"]
    a.dims = DIMS  # the batch shrinks in the last step: name the axes so per-neuron results apply
    return {
        "rate_neuron": analysis.firing_rate(a), "rate_record": analysis.firing_rate(a, "record"),
        "rate_all": analysis.firing_rate(a, "all"), "rate_step": analysis.firing_rate(a, "step").values,
        "rate_layer": analysis.firing_rate(run, "layer").values,
        "counts": analysis.spike_counts(a), "counts_s": analysis.spike_counts(s),
        "counts_step": analysis.spike_counts(s, "step").values, "counts_neuron": analysis.spike_counts(s, "neuron"),
        "population": analysis.population_rate(a).values, "population_s": analysis.population_rate(s).values,
        "isi": analysis.inter_spike_intervals(a).values, "isi_s": analysis.inter_spike_intervals(s).values,
        "grad": analysis.grad_norms(run).values,
        "dask_sum": float(a.to_dask().sum().compute()), "dask_s": s.to_dask().compute(),
    }


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Per backend: a store, what was written to it, and the single-process answers (before any client)."""
    out = {}
    for suffix in SUFFIXES:
        path = tmp_path_factory.mktemp("dist") / f"run.{suffix}"
        data = _write(path)
        with spikestore.open(path) as run:
            assert active_client() is None
            out[suffix] = path, data, _answers(run)
    return out


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """A run that two ranks of a process group recorded (the group faked, rank by rank, in this
    process), each its own data; and its single-process answers (before any client)."""
    path = tmp_path_factory.mktemp("ranked") / "run.zarr"
    with pytest.MonkeyPatch.context() as mp:  # (rank 1: other data, from a step later)
        record_as_ranks(path, mp, lambda store, rank: _write_into(store, range(rank, STEPS)), chunk_bytes=400)
    with spikestore.open(path) as run:
        assert run.ranks == [0, 1] and active_client() is None
        return path, _answers(run)


@pytest.fixture(scope="module")
def client(stores, ranked):
    """Two worker processes on loopback, one thread each; shut down after the module (the stores, and
    their single-process answers, are made first)."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _same(got, want):
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)  # exact, floats included


@pytest.mark.slow  # spawns processes
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_answers_equal_numpy_and_the_single_process_ones(stores, client, suffix):
    path, data, single = stores[suffix]
    with spikestore.open(path) as run, distributed.get_task_stream(client) as ts:
        assert active_client() is client
        got = _answers(run)
    _same(got, single)
    a = [v for _, v in data["output/a"]]
    assert got["counts"].tolist() == [int(np.count_nonzero(v)) for v in a]
    np.testing.assert_array_equal(got["rate_record"], [v.mean(dtype=np.float64) for v in a])
    assert got["rate_all"] == sum(np.count_nonzero(v) for v in a) / sum(v.size for v in a)
    assert got["dask_sum"] == sum(float(v.sum()) for v in a)
    np.testing.assert_array_equal(got["dask_s"], np.stack([v for _, v in data["output/s"][:-T]]
                                                          + [np.pad(v, ((0, 3), (0, 0))) for _, v in
                                                             data["output/s"][-T:]]))
    # Every chunk task ran on a worker process, and there were many of them.
    workers = set(client.scheduler_info()["workers"])
    ours = [t for t in ts.data if "spikestore-" in str(t["key"])]  # analysis passes and to_dask() chunks
    assert len(ours) > 20 and {t["worker"] for t in ours} <= workers
    assert os.getpid() not in client.run(os.getpid).values()
    # ... which opened the store themselves.
    assert all(str(path) in paths for paths in client.run(open_runs).values())


@pytest.mark.slow  # spawns processes
def test_a_run_of_two_ranks_is_analysed_on_the_workers(ranked, client):
    path, single = ranked
    with spikestore.open(path) as run, distributed.get_task_stream(client) as ts:
        got = _answers(run)
        parts = {r: run.rank(r)["output/a"] for r in run.ranks}
        assert got["counts"].tolist() == [int(np.count_nonzero(parts[int(r)][i]))
                                          for r, i in zip(run["output/a"].ranks, _positions(run["output/a"]),
                                                          strict=True)]
    _same(got, single)
    assert len([t for t in ts.data if "spikestore-" in str(t["key"])]) > 20
    opened = {p for paths in client.run(open_runs).values() for p in paths}
    assert str(path) in opened  # the workers opened the run (and through it both ranks' parts)


def _positions(merged):
    """Position of each merged record in its rank's own stream."""
    seen: dict[int, int] = {}
    out = []
    for r in merged.ranks.tolist():
        out.append(seen.get(r, 0))
        seen[r] = out[-1] + 1
    return out


@pytest.mark.slow  # spawns processes
def test_the_xarray_engine_reads_on_the_workers_through_one_open_run_each(tmp_path, client):
    xr = pytest.importorskip("xarray")
    path = tmp_path / "xr.zarr"
    data = _write(path, range(4))
    with xr.open_dataset(path, engine="spikestore", chunks={}) as ds, distributed.get_task_stream(client) as ts:
        total = float(ds["output/a"].sum().compute())
    assert total == sum(float(v.sum()) for _, v in data["output/a"])
    ran = {t["worker"] for t in ts.data if "open_dataset" in str(t["key"]) or "sum" in str(t["key"])}
    assert ran and ran <= set(client.scheduler_info()["workers"])
    opened = client.run(open_runs)  # the pickled streams reopened the run once, and kept it for later tasks
    assert all(str(path) in opened[w] for w in ran)


def test_a_pickled_stream_reopens_once_and_sees_records_committed_since(tmp_path):
    path = tmp_path / "grow.zarr"
    data = _write(path, range(3))
    with spikestore.open(path) as run:
        first = pickle.loads(pickle.dumps(run["output/s"]))  # as a worker would: this process's copy
        assert first is not run["output/s"] and len(first) == len(run["output/s"])
        assert pickle.loads(pickle.dumps(run["output/s"])) is first  # the copy is kept, not reopened
        more = _write(path, range(3, 5), mode="a")
        run.refresh()
        again = pickle.loads(pickle.dumps(run["output/s"]))  # carries more records than the copy holds
        assert again is first and len(again) == len(run["output/s"]) > 3 * T
        np.testing.assert_array_equal(again[-1], more["output/s"][-1][1])
        seg = pickle.loads(pickle.dumps(run["output/s"].segments[0]))
        assert seg.stream is first
        np.testing.assert_array_equal(seg.read(0, 2), run["output/s"][:2])
    assert len(data["output/s"]) == 3 * T


def test_a_task_carries_a_reference_not_the_chunk(stores):
    path, _, _ = stores["zarr"]
    with spikestore.open(path) as run:
        s = run["output/a"]
        block = next(s.segments[0].blocks())
        block.values()  # the chunk is in the run's cache
        ref = BlockRef(block)
        raw = pickle.dumps(ref)
        assert len(raw) < 1000 and len(raw) < block.rows().nbytes
        back = pickle.loads(raw)
        np.testing.assert_array_equal(back.block().values(), block.values())  # reopened in this process


@pytest.mark.slow  # spawns processes
def test_records_committed_after_a_worker_opened_the_store(tmp_path, client):
    path = tmp_path / "grow.zarr"
    data = _write(path, range(6))
    with spikestore.open(path) as run:
        assert analysis.spike_counts(run["output/s"]).sum() == sum(np.count_nonzero(v) for _, v in data["output/s"])
        more = _write(path, range(6, STEPS), mode="a")
        run.refresh()
        want = [int(np.count_nonzero(v)) for _, v in data["output/s"] + more["output/s"]]
        assert analysis.spike_counts(run["output/s"]).tolist() == want  # the workers refreshed their copy
        assert float(run["output/s"].to_dask().sum().compute()) == float(sum(want))
