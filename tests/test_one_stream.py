"""One Stream for any number of parts: a run recorded by two ranks reads, analyses and exports as a
one-process run does.

Each test runs on a one-process store and on a run that two ranks of a process group (faked in this
process) recorded, and checks every answer against numpy references built from what was written, in the
stream's record order (by step, then rank, then call, for several ranks), and against reads of each
rank's part alone (``run.rank(r)``).
"""

from __future__ import annotations

import zipfile
from typing import NamedTuple

import numpy as np
import pytest
from helpers import M_SEL, S_SEL, record_as_ranks

import spikestore
from spikestore import analysis
from spikestore.export import to_hdf5, to_npz, to_nwb, to_parquet

T, STEPS, N = 3, 5, 4


class Rec(NamedTuple):
    step: int
    call: int
    rank: int
    value: np.ndarray


def _record(store: spikestore.Store, rng: np.random.Generator, rank: int, data: dict[str, list[Rec]]) -> None:
    """Multi-step spikes and voltages (the last batch smaller: a second segment), single-step spikes
    with several records per step, and, on rank 1, a stream no other rank has."""
    def add(key: str, step: int, call: int, value: np.ndarray) -> None:
        store.append(key, value)
        data.setdefault(key, []).append(Rec(step, call, rank, value))

    for key in ("output/a", "v_seq/a"):
        store.set_stream_info(key, selection=M_SEL)
    store.set_stream_info("output.1/s", selection=S_SEL)
    for step in range(STEPS):
        store.set_step(step)
        batch = N if step < STEPS - 1 else N - 1
        add("output/a", step, 0, (rng.random((T, batch, 6)) < 0.3).astype(np.float32))
        add("v_seq/a", step, 0, rng.standard_normal((T, batch, 6)).astype(np.float32))
        for t in range(T):
            add("output.1/s", step, t, (rng.random((batch, 5)) < 0.4).astype(np.float32))
        if rank == 1:
            add("only1/x", step, 0, np.float32(10 * step + rank))


@pytest.fixture(params=["one process", "two ranks"])
def run_and_data(request, tmp_path, monkeypatch):
    """A run and what was written to it, each stream's records in the run's record order."""
    path = tmp_path / "run.zarr"
    rng = np.random.default_rng(7)
    data: dict[str, list[Rec]] = {}
    if request.param == "two ranks":
        record_as_ranks(path, monkeypatch, lambda store, rank: _record(store, rng, rank, data), chunk_bytes=200)
    else:
        with spikestore.Store(path, mode="w", chunk_bytes=200) as store:
            _record(store, rng, 0, data)
    data = {k: sorted(v, key=lambda r: (r.step, r.rank, r.call)) for k, v in data.items()}
    with spikestore.open(path) as run:
        assert run.ranks == ([0, 1] if request.param == "two ranks" else [0])
        yield run, data


KEYS = ["output/a", "v_seq/a", "output.1/s"]


def _padded(recs: list[Rec], fill: float) -> np.ndarray:
    """The records padded along the batch axis (axis 1 of multi-step records, 0 of single-step ones)."""
    axis = 1 if recs[0].value.ndim == 3 else 0
    shape = list(recs[0].value.shape)
    shape[axis] = max(r.value.shape[axis] for r in recs)
    out = np.full((len(recs), *shape), fill, np.float32)
    for k, r in enumerate(recs):
        out[(k, *(slice(None),) * axis, slice(0, r.value.shape[axis]))] = r.value
    return out


def _fill(key: str) -> float:
    return np.nan if key.startswith("v_seq") else 0.0


@pytest.mark.parametrize("key", KEYS)
def test_records_and_index_arrays(run_and_data, key):
    run, data = run_and_data
    s, recs = run[key], data[key]
    assert len(s) == len(recs) and isinstance(s, spikestore.Stream)
    for i, r in enumerate(recs):
        np.testing.assert_array_equal(s[i], r.value)
        np.testing.assert_array_equal(s[i, 0, ...], r.value[0])
    np.testing.assert_array_equal(s[-1], recs[-1].value)
    same_shape = [i for i, r in enumerate(recs) if r.value.shape == recs[0].value.shape]
    np.testing.assert_array_equal(s[np.array(same_shape[::-1])], np.stack([recs[i].value for i in same_shape[::-1]]))
    head = same_shape[:4]
    np.testing.assert_array_equal(s[head[0]:head[-1] + 1], np.stack([recs[i].value for i in head]))
    np.testing.assert_array_equal(s.steps, [r.step for r in recs])
    np.testing.assert_array_equal(s.calls, [r.call for r in recs])
    np.testing.assert_array_equal(s.ranks, [r.rank for r in recs])
    assert len(s.times) == len(recs) and np.all(np.isfinite(s.times))
    for rank in run.ranks:
        mine = [r for r in recs if r.rank == rank]
        got = s.sel(2, call=mine[-1].call if key == "output.1/s" else None, rank=rank)
        want = next(r for r in recs if r.rank == rank and r.step == 2 and r.call == mine[-1].call)
        np.testing.assert_array_equal(got, want.value)
        np.testing.assert_array_equal(s.sel([0, 1], rank=rank),
                                      np.stack([r.value for r in mine if r.step in (0, 1)]))
    np.testing.assert_array_equal(s.sel(slice(1, 2)), np.stack([r.value for r in recs if r.step in (1, 2)]))
    for i in range(len(recs)):
        assert s.segment_of(i).shape == recs[i].value.shape
    np.testing.assert_array_equal(s.tensor(len(recs) - 1).numpy(), recs[-1].value)
    assert s.dims == (("time", "batch", "neuron") if key != "output.1/s" else ("batch", "neuron"))


@pytest.mark.parametrize("key", KEYS)
def test_segments_positions_and_chunks_cover_every_record_once(run_and_data, key):
    run, data = run_and_data
    s, recs = run[key], data[key]
    assert sum(seg.count for seg in s.segments) == len(recs)
    assert {seg.rank for seg in s.segments} == set(run.ranks)
    seen = np.zeros(len(recs), int)
    for seg in s.segments:
        pos = s.record_positions(seg)
        seen[pos] += 1
        assert [recs[p].rank for p in pos] == [seg.rank] * seg.count
        np.testing.assert_array_equal(s.to_dask(segment=s.segments.index(seg)).compute(),
                                      np.stack([recs[p].value for p in pos]))
    assert seen.tolist() == [1] * len(recs)
    for start, stop in ((0, None), (1, len(recs) - 1)):
        chunks = list(s.iter_chunks(start, stop, max_records=2))
        got = np.concatenate([c.positions for c in chunks])
        assert sorted(got.tolist()) == list(range(len(recs)))[start:stop]
        for c in chunks:
            assert len(c.values) == len(c.positions) <= 2
            np.testing.assert_array_equal(c.steps, s.steps[c.positions])
            for v, p in zip(c.values, c.positions, strict=True):
                np.testing.assert_array_equal(v, recs[p].value)
    assert [r.shape for r in s] == [r.value.shape for r in recs]


@pytest.mark.parametrize("key", KEYS)
def test_one_array_views(run_and_data, key):
    run, data = run_and_data
    s, recs = run[key], data[key]
    want = _padded(recs, _fill(key))
    np.testing.assert_array_equal(s.padded[:], want)
    np.testing.assert_array_equal(s.padded[[3, 0]], want[[3, 0]])
    np.testing.assert_array_equal(s.padded[len(recs) - 1], want[-1])
    np.testing.assert_array_equal(s.to_dask().compute(), want)
    axis = 1 if key != "output.1/s" else 0
    np.testing.assert_array_equal(s.batch_sizes, [r.value.shape[axis] for r in recs])
    da = s.to_xarray()
    np.testing.assert_array_equal(da.values, want)
    assert da.dims == ("record", *s.dims)
    for coord, want_coord in (("step", [r.step for r in recs]), ("call", [r.call for r in recs]),
                              ("rank", [r.rank for r in recs]), ("batch_size", s.batch_sizes)):
        np.testing.assert_array_equal(da[coord].values, want_coord)


def test_a_key_one_rank_recorded(run_and_data):
    run, data = run_and_data
    if "only1/x" not in data:
        assert "only1/x" not in run
        return
    s = run["only1/x"]
    np.testing.assert_array_equal(s[:], [r.value for r in data["only1/x"]])
    assert s.ranks.tolist() == [1] * STEPS and [seg.rank for seg in s.segments] == [1]
    assert "only1/x" not in run.rank(0) and len(run.rank(1)["only1/x"]) == STEPS


@pytest.mark.parametrize("key", KEYS)
def test_nbytes_and_parts(run_and_data, key):
    run, _ = run_and_data
    s = run[key]
    assert s.nbytes() == sum(run.rank(r)[key].nbytes() for r in run.ranks) > 0
    for r in run.ranks:
        part = run.rank(r)[key]
        assert part.ranks.tolist() == [r] * len(part)
        mine = np.flatnonzero(s.ranks == r)
        assert len(mine) == len(part)
        for i, j in zip(mine, range(len(part)), strict=True):
            np.testing.assert_array_equal(s[i], part[j])
        np.testing.assert_array_equal(s.padded[mine], part.padded[:])  # (every rank has a short batch)


def test_analysis(run_and_data):
    run, data = run_and_data
    for key in ("output/a", "output.1/s"):
        s, recs = run[key], data[key]
        counts = np.array([np.count_nonzero(r.value) for r in recs])
        sizes = np.array([r.value.size for r in recs])
        np.testing.assert_array_equal(analysis.spike_counts(s, max_elements=20), counts)
        by_step = analysis.spike_counts(s, "step")
        np.testing.assert_array_equal(by_step.values, [counts[s.steps == k].sum() for k in range(STEPS)])
        np.testing.assert_allclose(analysis.firing_rate(s, "record"), counts / sizes)
        assert analysis.firing_rate(s, "all") == pytest.approx(counts.sum() / sizes.sum())
        step_rates = analysis.firing_rate(s, "step").values
        np.testing.assert_allclose(step_rates, [counts[s.steps == k].sum() / sizes[s.steps == k].sum()
                                                for k in range(STEPS)])
        batch_axis = 1 if key == "output/a" else 0
        neurons = sum(r.value.sum(axis=tuple(range(batch_axis + 1))) for r in recs)
        samples = sum(int(np.prod(r.value.shape[:batch_axis + 1])) for r in recs)
        np.testing.assert_array_equal(analysis.spike_counts(s, "neuron"), neurons)
        np.testing.assert_allclose(analysis.firing_rate(s, "neuron"), neurons / samples)
        pop = analysis.population_rate(s)
        if key == "output/a":
            np.testing.assert_allclose(pop.values, [r.value.mean(axis=(1, 2)) for r in recs])
        else:
            np.testing.assert_allclose(pop.values, counts / sizes)
        np.testing.assert_array_equal(pop["rank"].values, [r.rank for r in recs])
        per_rank = sum(_hist(analysis.inter_spike_intervals(run.rank(r)[key]).values) for r in run.ranks)
        np.testing.assert_array_equal(_hist(analysis.inter_spike_intervals(s, max_elements=20).values), per_rank)
    layers = analysis.firing_rate(run, "layer")
    assert layers.layer.values.tolist() == ["a"]
    np.testing.assert_allclose(layers.values, [analysis.firing_rate(run["output/a"], "all")])
    norms = analysis.grad_norms(run, quantity="v_seq")
    want = [np.sqrt(sum(float((r.value.astype(np.float64) ** 2).sum()) for r in data["v_seq/a"] if r.step == k))
            for k in range(STEPS)]
    np.testing.assert_allclose(norms.sel(layer="a").values, want, rtol=1e-6)


def _hist(values: np.ndarray) -> np.ndarray:
    """A histogram padded to a fixed length, so that histograms of different lengths add up."""
    return np.pad(values, (0, 2 * T - len(values)))


def test_exporters(run_and_data, tmp_path):
    run, data = run_and_data
    two = len(run.ranks) > 1
    out = to_npz(run, tmp_path / "x.npz")
    with np.load(out) as z:
        for key in ("output/a", "output.1/s"):
            recs = sorted(data[key], key=lambda r: r.rank)  # rank by rank, each in its own order
            members = sorted(n for n in z.files if (n == key or n.startswith(key + "@")) and not n.endswith(".dtype"))
            got = [v for n in members for v in z[n]]
            assert len(got) == len(recs)
            np.testing.assert_array_equal(z[key + ".steps"], [r.step for r in recs])
            assert (key + ".ranks" in z.files) == two
            if two:
                np.testing.assert_array_equal(z[key + ".ranks"], [r.rank for r in recs])
    with zipfile.ZipFile(out) as zf:
        assert all(not n.startswith("only1/x") for n in zf.namelist()) != two
    h5py = pytest.importorskip("h5py")
    with h5py.File(to_hdf5(run, tmp_path / "x.h5"), "r") as f:
        recs = sorted(data["output/a"], key=lambda r: r.rank)
        g = f["output/a"]
        assert sum(len(g[n]) for n in g if n.startswith("seg0")) == len(recs)
        np.testing.assert_array_equal(g["step"][:], [r.step for r in recs])
        assert ("rank" in g) == two
    pq = pytest.importorskip("pyarrow.parquet")
    spikes = pq.read_table(to_parquet(run, tmp_path / "x.parquet") / "spikes.parquet")
    assert spikes.num_rows == sum(int(np.count_nonzero(r.value)) for k in ("output/a", "output.1/s")
                                  for r in data[k])
    assert ("rank" in spikes.column_names) == two
    pytest.importorskip("pynwb")
    assert to_nwb(run, tmp_path / "x.nwb").stat().st_size > 0


def test_xarray_engine_and_datatree(run_and_data):
    xr = pytest.importorskip("xarray")
    run, data = run_and_data
    with xr.open_dataset(run.path, engine="spikestore") as ds:
        for key in KEYS:
            np.testing.assert_array_equal(ds[key].values, _padded(data[key], _fill(key)))
            np.testing.assert_array_equal(ds[f"{key}:rank"].values, [r.rank for r in data[key]])
            np.testing.assert_array_equal(ds[f"{key}:step"].values, [r.step for r in data[key]])
    with xr.open_datatree(run.path, engine="spikestore") as tree:
        node = tree["output/a"]
        np.testing.assert_array_equal(node["output"].values, _padded(data["output/a"], 0.0))
        np.testing.assert_array_equal(node["rank"].values, [r.rank for r in data["output/a"]])


def test_verify_and_summary(run_and_data):
    from spikestore import verify

    run, data = run_and_data
    assert verify(run.path) == []
    rows = {r["stream"]: r for r in run.summary()}
    assert set(rows) == set(data)
    for key, recs in data.items():
        assert rows[key]["records"] == len(recs)
        assert rows[key]["bytes"] == run[key].nbytes()


def test_refresh_and_pickling(tmp_path, monkeypatch):
    """A stream handed out before ``run.refresh()`` shows the records committed since, on every rank, in
    the record order; a pickled stream (what a dask task carries) reads the same records."""
    import pickle

    path = tmp_path / "run.zarr"

    def record(steps):
        def write(store, rank):
            for step in steps:
                store.set_step(step)
                store.append("x/a", np.full(2, 10 * step + rank, np.float32))
        return write

    record_as_ranks(path, monkeypatch, record(range(2)))
    with spikestore.open(path) as run:
        s = run["x/a"]
        assert s[:, 0].tolist() == [0, 1, 10, 11]
        record_as_ranks(path, monkeypatch, record(range(2, 4)), mode="a")
        assert len(s) == 4
        run.refresh()
        assert s[:, 0].tolist() == [0, 1, 10, 11, 20, 21, 30, 31] and s.ranks.tolist() == [0, 1] * 4
        back = pickle.loads(pickle.dumps(s))
        np.testing.assert_array_equal(back[:], s[:])
        np.testing.assert_array_equal(back.ranks, s.ranks)
        seg = pickle.loads(pickle.dumps(s.segments[-1]))
        assert seg.rank == 1 and np.array_equal(seg.read(0, seg.count), run.rank(1)["x/a"][seg.start:seg.stop])
