"""Every exporter on a run recorded by several ranks: every rank's records, each labelled with its rank.

The two-rank run is recorded in this process (the process group faked, as
in tests/test_ranks.py), and each output is read back with its own
ecosystem's reader and checked against ``run.rank(r)[key]``, rank by rank.
"""

from __future__ import annotations

import zipfile
from collections import Counter

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from helpers import record_as_ranks

import spikestore
from spikestore.cli import main
from spikestore.export import export, to_hdf5, to_npz, to_nwb, to_parquet

STEPS = 6
T = 3  # time bins of the multi-step records
SPIKES = ("output/lif", "output/s")  # bit-packed streams: exported as spike events
VALUES = ("v_seq/lif", "grad_input/lif", "only1/x")  # the others


def _record(store: spikestore.Store, rank: int) -> None:
    """Rank ``rank``'s records: rank 1's last batch is short, and only rank 1 records ``only1/x``."""
    g = torch.Generator().manual_seed(10 + rank)
    store.set_stream_info("output/lif", selection={"step_mode": "m", "batch_axis": 1})
    store.set_stream_info("v_seq/lif", selection={"step_mode": "m", "batch_axis": 1})
    store.set_stream_info("output/s", selection={"step_mode": "s", "batch_axis": 0})
    for step in range(STEPS):
        store.set_step(step)
        n = 2 if rank == 1 and step == STEPS - 1 else 4
        store.append("output/lif", (torch.rand(T, n, 2, 3, generator=g) < 0.3).float())
        store.append("v_seq/lif", torch.randn(T, n, 6, generator=g))
        store.append("grad_input/lif", torch.rand((), generator=g))
        for _call in range(2):  # a single-step layer: two calls a step
            store.append("output/s", (torch.rand(4, 5, generator=g) < 0.5).float())
        if rank == 1:
            store.append("only1/x", torch.randn(4, generator=g, dtype=torch.float64))


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    path = tmp_path_factory.mktemp("ranks") / "run.zarr"
    with pytest.MonkeyPatch.context() as mp:
        record_as_ranks(path, mp, _record, chunk_bytes=3000, metadata={"task": "ranked export"})
    return path


def expected(path, key, steps=(None, None)):
    """``[(rank, step, call, record)]`` of ``key`` as the exporters write them: rank by rank, in record order."""
    run = spikestore.open(path)
    out = []
    for r in run.ranks:
        part = run.rank(r)
        if key not in part.streams:
            continue
        s = part[key]
        whole = s[:] if len({seg.shape for seg in s.segments}) == 1 else None  # (one shape: one array)
        for j in range(len(s)):
            step = int(s.steps[j])
            if (steps[0] is None or step >= steps[0]) and (steps[1] is None or step < steps[1]):
                out.append((r, step, int(s.calls[j]), s[j] if whole is None else whole[j]))
    return out


def check_records(got, want):
    """``got`` and ``want``, lists of (rank, step, call, record), are the same records in the same order."""
    assert [w[:3] for w in got] == [w[:3] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g[3].dtype == w[3].dtype
        np.testing.assert_array_equal(g[3], w[3])


def pieces(arrays, index, key):
    """The records of ``key`` from ``arrays`` (an NPZ file or an HDF5 group), one array per piece."""
    segment = np.zeros(len(index["step"]), int) if index["segment"] is None else index["segment"]
    taken = Counter()
    out = []
    for r, step, call, p in zip(index["rank"], index["step"], index["call"], segment, strict=True):
        out.append((int(r), int(step), int(call), arrays[key(int(p))][taken[p]]))
        taken[p] += 1
    return out


def test_npz_every_rank_labelled(ranked, tmp_path):
    done = []
    out = to_npz(ranked, tmp_path / "x.npz", progress=lambda d, t: done.append((d, t)))
    assert done[-1] == (2 * 5 * STEPS + STEPS,) * 2  # every rank's records (5 a step each, and only1/x)
    z = np.load(out, allow_pickle=False)
    names = set(z.files)
    for key in SPIKES + VALUES:
        several = key + ".segment" in names
        arrays = {n: z[n].astype(str(z[n + ".dtype"])) for n in names  # (spikes are bool; .dtype: the store's)
                  if n == key or (n.startswith(key + "@") and not n.endswith(".dtype"))}
        index = {"rank": z[key + ".ranks"], "step": z[key + ".steps"], "call": z[key + ".calls"],
                 "segment": z[key + ".segment"] if several else None}
        check_records(pieces(arrays, index, lambda p, key=key, several=several: f"{key}@{p}" if several else key),
                      expected(ranked, key))
    # The ranks' full batches share one member; rank 1's short last batch is the second.
    assert z["output/lif@0"].shape == (2 * STEPS - 1, T, 4, 2, 3) and z["output/lif@1"].shape == (1, T, 2, 2, 3)
    assert z["grad_input/lif"].shape == (2 * STEPS,) and "grad_input/lif.segment" not in names
    assert set(z["only1/x.ranks"]) == {1} and z["only1/x"].dtype == np.float64
    part = np.load(to_npz(ranked, tmp_path / "p.npz", streams=["v_seq/*"], steps="2:5"), allow_pickle=False)
    assert sorted(part.files) == ["v_seq/lif", "v_seq/lif.calls", "v_seq/lif.dtype", "v_seq/lif.ranks",
                                  "v_seq/lif.steps"]
    assert part["v_seq/lif.steps"].tolist() == [2, 3, 4] * 2 and part["v_seq/lif.ranks"].tolist() == [0] * 3 + [1] * 3
    check_records(pieces({"v": part["v_seq/lif"]}, {"rank": part["v_seq/lif.ranks"], "step": part["v_seq/lif.steps"],
                                                     "call": part["v_seq/lif.calls"], "segment": None}, lambda p: "v"),
                  expected(ranked, "v_seq/lif", (2, 5)))


def test_hdf5_every_rank_labelled(ranked, tmp_path):
    out = to_hdf5(ranked, tmp_path / "x.h5", steps="1:")
    with h5py.File(out, "r") as f:
        assert f.attrs["spikestore_ranks"].tolist() == [0, 1]
        for key in SPIKES + VALUES:
            g = f[key]
            assert g.attrs["ranks"].tolist() == ([1] if key == "only1/x" else [0, 1])
            index = {name: g[name][:] for name in ("rank", "step", "call", "segment")}
            check_records(pieces(g, index, lambda p: f"seg{p:06d}"), expected(ranked, key, (1, None)))
        assert f["output/lif/seg000001"].shape == (1, T, 2, 2, 3) and "seg000002" not in f["output/lif"]
        assert f["output/lif/seg000000"].attrs["dtype"] == "float32"


def _events(records, key):
    """Spike events ``(rank, step, call, t, batch, neuron)`` of exported records, as the Parquet table has them."""
    rows = []
    for r, step, call, v in records:
        if key == "output/lif":
            t, b, n = np.nonzero(v.reshape(T, v.shape[1], -1))
        else:
            b, n = np.nonzero(v)
            t = np.full(len(b), call)
        rows += [(r, step, call, int(ti), int(bi), int(ni)) for ti, bi, ni in zip(t, b, n, strict=True)]
    return rows


def test_parquet_every_rank_labelled(ranked, tmp_path):
    out = to_parquet(ranked, tmp_path / "pq", steps=":5")
    spikes = pq.read_table(out / "spikes.parquet").to_pandas()
    assert list(spikes.columns) == ["quantity", "layer", "rank", "step", "call", "t", "batch", "neuron"]
    for key in SPIKES:
        layer = key.split("/")[1]
        got = spikes[spikes.layer == layer][["rank", "step", "call", "t", "batch", "neuron"]]
        want = _events(expected(ranked, key, (None, 5)), key)
        assert [tuple(int(x) for x in row) for row in got.itertuples(index=False)] == want
    assert set(spikes["rank"]) == {0, 1} and spikes["step"].max() == 4
    for key in VALUES:
        want = expected(ranked, key, (None, 5))
        table = pq.read_table(out / f"values-{want[0][3].dtype.name}.parquet").to_pandas()
        rows = table[(table.quantity == key.split("/")[0]) & (table.layer == key.split("/")[1])]
        got = [(int(row.rank), int(row.step), int(row.call),
                np.asarray(row.values, want[0][3].dtype).reshape(tuple(row.shape))) for row in rows.itertuples()]
        check_records(got, want)


def test_nwb_units_and_series_per_rank(ranked, tmp_path):
    from nwbinspector import Importance, inspect_nwbfile
    from pynwb import NWBHDF5IO

    dt = 0.002
    out = to_nwb(ranked, tmp_path / "x.nwb", dt=dt)
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        assert list(units.columns) == ["spike_times", "layer", "quantity", "rank", "batch", "neuron"]
        want: dict[tuple, list] = {}
        for key, bins, n_neuron in (("output/lif", T, 6), ("output/s", 2, 5)):
            layer = key.split("/")[1]
            for r in (0, 1):
                for b in range(4):  # every rank's units: the largest batch of its records
                    for n in range(n_neuron):
                        want[(layer, r, b, n)] = []
            for r, step, _call, t, b, n in _events(expected(ranked, key), key):
                want[(layer, r, b, n)].append((step * bins + t) * dt)
        got = {(row.layer, int(row.rank), int(row.batch), int(row.neuron)): list(row.spike_times)
               for row in units.itertuples()}
        assert got.keys() == want.keys()
        for unit, times in want.items():
            np.testing.assert_allclose(sorted(got[unit]), sorted(times), err_msg=str(unit))
        series = nwb.processing["misc"]
        assert sorted(series.data_interfaces) == ["grad_input.lif rank 0", "grad_input.lif rank 1",
                                                  "only1.x rank 1", "v_seq.lif rank 0", "v_seq.lif rank 1"]
        for r in (0, 1):
            v = series[f"v_seq.lif rank {r}"]
            assert f"rank {r}" in v.description
            records = [w[3] for w in expected(ranked, "v_seq/lif") if w[0] == r]
            data = v.data[:]
            assert data.shape == (STEPS * T, 4, 6)
            for j, rec in enumerate(records):  # T rows per record; rank 1's short batch padded with NaN
                np.testing.assert_array_equal(data[j * T:(j + 1) * T, :rec.shape[1]], rec)
                assert np.isnan(data[j * T:(j + 1) * T, rec.shape[1]:]).all()
            np.testing.assert_allclose(v.get_timestamps(), np.arange(STEPS * T) * dt)
        x = series["only1.x rank 1"]
        np.testing.assert_array_equal(x.data[:], np.stack([w[3] for w in expected(ranked, "only1/x")]))
    critical = [m for m in inspect_nwbfile(nwbfile_path=str(out)) if m.importance == Importance.CRITICAL]
    assert critical == []


def test_a_one_process_store_has_no_rank_field(tmp_path):
    path = tmp_path / "one.zarr"
    with spikestore.Store(path, chunk_bytes=3000) as store:
        _record(store, 0)
    with zipfile.ZipFile(export(path, tmp_path / "o.npz")) as z:
        assert not [n for n in z.namelist() if "rank" in n]
    with h5py.File(export(path, tmp_path / "o.h5"), "r") as f:
        assert "spikestore_ranks" not in f.attrs and "rank" not in f["output/lif"]
        assert "ranks" not in f["output/lif"].attrs
    out = export(path, tmp_path / "o.parquet")
    assert all("rank" not in pq.read_schema(p).names for p in out.iterdir())
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(export(path, tmp_path / "o.nwb")), "r") as io:
        nwb = io.read()
        assert "rank" not in nwb.units.colnames
        assert "v_seq.lif" in nwb.processing["misc"].data_interfaces


def test_one_rank_s_part_exports_alone(ranked, tmp_path):
    # run.zarr/__rank1 is a plain store of its own: it exports as one, its records alone.
    z = np.load(export(ranked / "__rank1", tmp_path / "r1.npz"), allow_pickle=False)
    assert "only1/x" in z.files and "only1/x.ranks" not in z.files
    np.testing.assert_array_equal(z["only1/x"], spikestore.open(ranked).rank(1)["only1/x"][:])


def test_cli_exports_every_rank(ranked, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["export", str(ranked), str(tmp_path / "c.npz"), "--streams", "grad_input/*",
                             "--steps", "3:"])
    assert r.exit_code == 0, r.output
    z = np.load(tmp_path / "c.npz", allow_pickle=False)
    assert z["grad_input/lif.ranks"].tolist() == [0, 0, 0, 1, 1, 1]
    assert z["grad_input/lif.steps"].tolist() == [3, 4, 5] * 2
    want = expected(ranked, "grad_input/lif", (3, None))
    np.testing.assert_array_equal(z["grad_input/lif"], [w[3] for w in want])
    r = runner.invoke(main, ["export", str(ranked), str(tmp_path / "c.parquet")])
    assert r.exit_code == 0, r.output
    assert set(pq.read_table(tmp_path / "c.parquet" / "spikes.parquet")["rank"].to_pylist()) == {0, 1}


@pytest.mark.parametrize("fmt", ["npz", "hdf5", "parquet"])
def test_each_rank_s_chunks_are_read_once(ranked, tmp_path, monkeypatch, fmt):
    # Bounded memory and no wasted reads: each part's chunks, one at a time, each once.
    from spikestore.backends import open_backend

    probe = open_backend(ranked, backend=None, writable=False)
    backend = type(probe)
    probe.close()
    real = backend.read_chunk
    reads = []

    def read_chunk(self, node, chunk):
        reads.append((str(self.path), node, chunk))
        return real(self, node, chunk)

    monkeypatch.setattr(backend, "read_chunk", read_chunk)
    export(ranked, tmp_path / "x", fmt)
    assert reads and max(Counter(reads).values()) == 1
    assert {p for p, _, _ in reads} == {str(ranked), str(ranked / "__rank1")}


def test_records_of_a_merged_stream_of_one_rank_keep_their_steps(tmp_path, monkeypatch):
    """A key only rank 1 recorded, with steps going back (set_step allows it): the records and their
    steps stay paired when a pass is limited to some segments."""
    from spikestore.export._common import iter_records

    def record(store, rank):
        for step in (5, 6, 1, 2):
            store.set_step(step)
            store.append("output/a", np.float32(step))
            if rank == 1:
                store.append("only1/x", np.float32(step))

    path = tmp_path / "run.zarr"
    record_as_ranks(path, monkeypatch, record)
    with spikestore.open(path) as run:
        merged = run["only1/x"]
        for segments in (None, merged.segments):
            got = list(iter_records(merged, (None, None), segments))
            steps = np.concatenate([r.steps for r in got])
            values = np.concatenate([r.values for r in got])
            np.testing.assert_array_equal(values, steps.astype(np.float32))
            assert sorted(steps.tolist()) == [1, 2, 5, 6]
