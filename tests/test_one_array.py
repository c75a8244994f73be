"""A stream is one array: records padded along the batch axis, with a batch_size coordinate."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from helpers import M_SEL, S_SEL, same

import spikestore
from spikestore import InvalidArgumentError, analysis

N = 6
BATCHES = [8, 8, 3]  # the last, partial batch of an epoch


@pytest.fixture
def epoch(store_path):
    """Spikes (float32 0/1, bit-packed), voltages and int counts of batches 8, 8, 3, and two streams
    that cannot be one array: a layer whose width changes, and records with no named batch axis."""
    rng = np.random.default_rng(1)
    written: dict[str, list[np.ndarray]] = {}

    def add(store: spikestore.Store, key: str, value: np.ndarray) -> None:
        store.append(key, value)
        written.setdefault(key, []).append(value)

    with spikestore.Store(store_path, mode="w", chunk_bytes=64) as store:
        for key in ("output/fc1", "v/fc1", "count/fc1", "output/wide"):
            store.set_stream_info(key, selection=S_SEL)
        store.set_stream_info("output/seq", selection=M_SEL)
        for step, b in enumerate(BATCHES):
            store.set_step(10 + step)
            add(store, "output/fc1", (rng.random((b, N)) < 0.3).astype(np.float32))
            add(store, "v/fc1", rng.standard_normal((b, N)).astype(np.float32))
            add(store, "count/fc1", rng.integers(1, 9, (b, N)).astype(np.int16))
            add(store, "output/seq", (rng.random((4, b, N)) < 0.3).astype(np.float32))   # (time, batch, neuron)
            add(store, "output/wide", (rng.random((b, N + step)) < 0.3).astype(np.float32))  # width changes
            add(store, "x/hand", rng.standard_normal((b, N)).astype(np.float32))   # no selection: no batch axis
    return store_path, written


def _real(values: np.ndarray, sizes: list[int], axis: int = 0) -> list[np.ndarray]:
    """The real rows of each padded record."""
    return [np.take(v, np.arange(k), axis=axis) for v, k in zip(values, sizes, strict=True)]


def test_to_dask_is_one_padded_array_per_stream(epoch):
    path, written = epoch
    with spikestore.open(path) as run:
        spikes, volts, counts = run["output/fc1"], run["v/fc1"], run["count/fc1"]
        assert len(spikes.segments) == 2  # stored as written: a new segment for the smaller batch
        for s in (spikes, volts, counts):
            a = s.to_dask()
            assert a.shape == (3, 8, N) and a.dtype == written[s.key][0].dtype
            assert sum(a.chunks[0]) == 3 and a.chunks[1:] == ((8,), (N,))
            values = a.compute()
            for got, ref in zip(_real(values, BATCHES), written[s.key], strict=True):
                same(got, ref)
            assert s.batch_sizes.tolist() == BATCHES
            same(s.padded[:], values)
            same(s.padded[2, :3], written[s.key][2])
        assert (spikes.to_dask().compute()[2, 3:] == 0).all()       # bits pad with 0
        assert np.isnan(volts.to_dask().compute()[2, 3:]).all()     # floats with NaN
        assert (counts.to_dask().compute()[2, 3:] == 0).all()       # integers with 0
        seq = run["output/seq"].to_dask().compute()                # batch is axis 1 of (time, batch, neuron)
        assert seq.shape == (3, 4, 8, N) and (seq[2, :, 3:] == 0).all()
        for got, ref in zip(_real(seq, BATCHES, axis=1), written["output/seq"], strict=True):
            same(got, ref)
        with pytest.raises(InvalidArgumentError, match="segments"):
            spikes[1:3]  # s[...] keeps records with their own shapes: it refuses to stack 8 and 3


def test_streams_differing_on_another_axis_stay_segments(epoch):
    path, written = epoch
    with spikestore.open(path) as run:
        for key, why in (("output/wide", "other than the batch axis"), ("x/hand", "name no .batch. axis")):
            s = run[key]
            with pytest.raises(InvalidArgumentError, match=why):
                s.to_dask()
            with pytest.raises(InvalidArgumentError, match="segment=k"):
                s.to_xarray()
            with pytest.raises(InvalidArgumentError, match="segment=k"):
                s.padded[0]
            same(s.to_dask(segment=-1).compute()[0], written[key][2])
        hand = run["x/hand"]
        hand.dims = ("batch", "neuron")  # naming the batch axis makes it one array
        assert hand.to_dask().shape == (3, 8, N) and hand.batch_sizes.tolist() == BATCHES
    with xr.open_dataset(path, engine="spikestore") as ds:
        wide = sorted(v for v in ds.data_vars if v.startswith("output/wide"))
        assert wide == ["output/wide#0", "output/wide#1", "output/wide#2"]
        same(ds["output/wide#2"].values[0], written["output/wide"][2])
        assert "x/hand#0" in ds and "x/hand" not in ds


def test_xarray_has_one_variable_per_stream_with_record_coords(epoch):
    path, written = epoch
    with xr.open_dataset(path, engine="spikestore") as ds:
        for key in ("output/fc1", "v/fc1", "count/fc1"):
            var = ds[key]
            assert var.dims == (f"{key}:record", f"{key}:batch", f"{key}:neuron") and var.shape == (3, 8, N)
            assert ds[f"{key}:step"].values.tolist() == [10, 11, 12]
            assert ds[f"{key}:call"].values.tolist() == [0, 0, 0]
            assert ds[f"{key}:batch_size"].values.tolist() == BATCHES
            assert ds[f"{key}:batch_size"].dtype.kind == "i"
            for got, ref in zip(_real(var.values, BATCHES), written[key], strict=True):
                same(got, ref)
            same(var[2, :3].values, written[key][2])     # lazy outer indexing across the segments
            same(var[[2, 0], 1].values, np.stack([written[key][2][1], written[key][0][1]]))
        assert np.isnan(ds["v/fc1"].values[2, 3:]).all() and (ds["output/fc1"].values[2, 3:] == 0).all()
    with xr.open_dataset(path, engine="spikestore", chunks={}) as ds:
        run = spikestore.open(path)
        assert ds["v/fc1"].chunks[0] == run["v/fc1"].to_dask().chunks[0]
        np.testing.assert_array_equal(ds["v/fc1"].values, run["v/fc1"].to_dask().compute())
        run.close()
    with spikestore.open(path) as run:
        da = run["v/fc1"].to_xarray()
        assert da.dims == ("record", "batch", "neuron") and da.batch_size.values.tolist() == BATCHES
        assert da.step.values.tolist() == [10, 11, 12]
        # real values only: mask the padding with the batch_size coordinate
        mask = xr.DataArray(np.arange(8), dims="batch") < da.batch_size
        np.testing.assert_allclose(float(da.where(mask).sum()), sum(float(v.sum()) for v in written["v/fc1"]),
                                   rtol=1e-5)


def test_analysis_never_counts_padding(epoch):
    path, written = epoch
    with spikestore.open(path) as run:
        s = run["output/fc1"]
        real = np.concatenate(written["output/fc1"])  # (19, N): the real samples only
        np.testing.assert_allclose(analysis.firing_rate(s), real.mean(axis=0))
        np.testing.assert_allclose(analysis.firing_rate(s, "all"), real.mean())
        np.testing.assert_allclose(analysis.firing_rate(s, "record"), [r.mean() for r in written["output/fc1"]])
        np.testing.assert_array_equal(analysis.spike_counts(s, "neuron"), real.sum(axis=0))
        # the padded array with its batch_size coordinate gives the same numbers
        a, sizes = s.to_dask(), s.batch_sizes
        np.testing.assert_allclose(a.sum(axis=(0, 1)).compute() / sizes.sum(), analysis.firing_rate(s))
        assert a.mean().compute() < real.mean()  # a plain mean would count the padding
        seq = run["output/seq"]
        real_seq = np.concatenate(written["output/seq"], axis=1)  # (T, 19, N)
        np.testing.assert_allclose(analysis.firing_rate(seq), real_seq.mean(axis=(0, 1)))
        np.testing.assert_allclose(analysis.population_rate(seq).values,
                                   [r.mean(axis=(1, 2)) for r in written["output/seq"]])


def test_padded_takes_the_keys_getitem_takes(epoch):
    path, written = epoch
    with spikestore.open(path) as run:
        s = run["v/fc1"]
        whole = s.to_dask().compute()
        same(s.padded[-1], whole[2])
        same(s.padded[[2, 0, 2]], whole[[2, 0, 2]])
        same(s.padded[np.array([False, True, True])], whole[1:])
        same(s.padded[::2], whole[::2])
        same(s.padded[1:, 2:5, 0], whole[1:, 2:5, 0])
        same(s.padded[()], whole)
        with pytest.raises(spikestore.RecordIndexError):
            s.padded[3]
        same(run["output/seq"].padded[2, :, :3], written["output/seq"][2])
