"""The xarray engine and Stream.to_xarray: lazy, named, equal to what was written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from helpers import M_SEL, count_chunk_reads, same, write_mixed

import spikestore
from spikestore import InvalidArgumentError

#: Streams of write_mixed whose records have a batch axis (monitor selections).
BATCHED = {"output/fc", "v_seq/fc", "output/s"}


@pytest.fixture
def mixed(store_path):
    return store_path, write_mixed(store_path)


@pytest.fixture
def chunk_reads(store_path, monkeypatch):
    """Every backend.read_chunk call made during the test, as (node, chunk)."""
    write_mixed(store_path)
    return count_chunk_reads(monkeypatch, store_path)


def test_the_engine_is_registered():
    assert "spikestore" in xr.backends.list_engines()


def test_open_dataset_reads_no_chunk_until_values_are_asked_for(store_path, chunk_reads):
    ds = xr.open_dataset(store_path, engine="spikestore")
    assert chunk_reads == []
    repr(ds)  # printing shows no values either
    assert chunk_reads == []
    _ = ds["v_seq/fc"][3, 1].values
    assert chunk_reads and all("v_seq/fc" in node for node, _ in chunk_reads)
    n = len(chunk_reads)
    _ = ds["output/fc:step"].values
    assert any(node.endswith("/step") for node, _ in chunk_reads[n:])
    ds.close()


def test_open_dataset_with_dask_chunks_is_lazy_and_follows_the_stored_chunks(store_path, chunk_reads):
    ds = xr.open_dataset(store_path, engine="spikestore", chunks={})
    assert chunk_reads == []
    run = spikestore.open(store_path)
    s = run["v_seq/fc"]
    var = ds["v_seq/fc"]  # two segments (batch 3, then 2), one variable
    assert var.chunks[0] == tuple(len(b) for seg in s.segments for b in seg.blocks())  # (reads nothing)
    assert var.chunks[0][0] == s.segments[0].chunk_records and sum(var.chunks[0]) == len(s)
    assert chunk_reads == []
    float(var.sum())
    assert chunk_reads
    ds.close()


def test_every_variable_equals_the_written_records(mixed):
    path, written = mixed
    run = spikestore.open(path)
    with xr.open_dataset(path, engine="spikestore") as ds:
        for key, recs in written.items():  # one variable per stream, segments or not
            s, var = run[key], ds[key]
            values = var.values
            for i, (_, v) in enumerate(recs):
                same(values[i][s.padded.layout.real(int(s.batch_sizes[i]))[1:]] if key in BATCHED else values[i], v)
            same(ds[f"{key}:step"].values, s.steps)
            assert var.dims[0] == f"{key}:record" and var.attrs["stream"] == key
            assert (f"{key}:batch_size" in ds.coords) == (key in BATCHED)
        assert set(ds.data_vars) == set(written)
        assert ds["v_seq/fc:batch_size"].values.tolist() == [3] * 20 + [2] * 3
        assert np.isnan(ds["v_seq/fc"].values[20:, :, 2]).all()  # float padding
        assert (ds["output/fc"].values[20:, :, 2] == 0).all()      # spike padding
        var = ds["v_seq/fc"]  # outer indexing on the lazy array
        ref = np.stack([v for _, v in written["v_seq/fc"][:20]])
        assert var.dims == tuple(f"v_seq/fc:{d}" for d in ("record", "time", "batch", "neuron"))
        same(var[[4, 1, 17], :, 2, [0, 9]].values, ref[[4, 1, 17]][:, :, 2][:, :, [0, 9]])
        same(var[19, 1:3].values, ref[-1, 1:3])
        same(var[-1, 1:3, :2].values, written["v_seq/fc"][-1][1][1:3])
        same(var[2:15:4, 0].values, ref[2:15:4, 0])
        same(var[[21, 3], 0, 0].values, np.stack([written["v_seq/fc"][i][1][0, 0] for i in (21, 3)]))
        assert json.loads(ds.attrs["metadata"]) == {"lr": 0.1}
    run.close()


def test_streams_and_drop_variables(mixed):
    path, _ = mixed
    ds = xr.open_dataset(path, engine="spikestore", streams=["output/fc", "x/int16", "x/bool"],
                         drop_variables=["x/bool"])
    assert set(ds.data_vars) == {"output/fc", "x/int16"}
    ds.close()


def test_stream_to_xarray_names_dims_and_carries_steps(mixed):
    path, written = mixed
    run = spikestore.open(path)
    da = run["v_seq/fc"].to_xarray(segment=0)
    assert da.dims == ("record", "time", "batch", "neuron")
    assert da.chunks is not None  # dask-backed
    same(da.values, np.stack([v for _, v in written["v_seq/fc"][:20]]))
    np.testing.assert_array_equal(da.step.values, np.arange(20))
    same(da.sel(record=7).values, written["v_seq/fc"][7][1])
    last = run["v_seq/fc"].to_xarray(segment=-1)
    assert last.record.values.tolist() == [20, 21, 22] and last.sizes["batch"] == 2
    by_step = da.swap_dims(record="step").sel(step=[3, 5])
    same(by_step.values, np.stack([written["v_seq/fc"][i][1] for i in (3, 5)]))
    whole = run["v_seq/fc"].to_xarray()  # padded along batch: one array
    assert whole.sizes == {"record": 23, "time": 4, "batch": 3, "neuron": 10}
    assert whole.batch_size.values.tolist() == [3] * 20 + [2] * 3
    same(whole[21, :, :2].values, written["v_seq/fc"][21][1])
    assert np.isnan(whole[21, :, 2].values).all()
    with pytest.raises(InvalidArgumentError, match="out of range"):
        run["v_seq/fc"].to_xarray(segment=5)
    single = run["output/s"].to_xarray(segment=0)
    assert single.dims == ("record", "batch", "neuron") and single.call.values[:4].tolist() == [0, 1, 2, 0]
    plain = run["x/int16"].to_xarray()
    assert plain.dims == ("record", "dim_0")
    run["x/int16"].dims = ("neuron",)
    assert run["x/int16"].to_xarray().dims == ("record", "neuron")
    with pytest.raises(InvalidArgumentError, match="name every axis"):
        run["x/int16"].dims = ("a", "b")
    run.close()


def test_selected_neurons_label_the_neuron_axis(store_path):
    with spikestore.Store(store_path, mode="w") as store:
        store.set_stream_info("output/l", selection=dict(M_SEL, neurons=[3, 7, 11], batch={"slice": [0, 4, 2]}))
        for step in range(3):
            store.set_step(step)
            store.append("output/l", np.ones((5, 2, 3), np.float32))
    run = spikestore.open(store_path)
    da = run["output/l"].to_xarray()
    assert da.neuron.values.tolist() == [3, 7, 11] and da.batch.values.tolist() == [0, 2]
    with xr.open_dataset(store_path, engine="spikestore") as ds:
        assert ds["output/l:neuron"].values.tolist() == [3, 7, 11]
    run.close()


def test_a_run_of_two_ranks_keeps_the_neuron_labels_and_attributes(tmp_path, monkeypatch):
    from helpers import record_as_ranks

    def record(store, rank):
        store.set_stream_info("output/l", selection=dict(M_SEL, neurons=[3, 7, 11], batch={"slice": [0, 4, 2]}))
        for step in range(3):
            store.set_step(step)
            store.append("output/l", np.full((5, 2, 3), rank + step, np.float32))

    path = tmp_path / "run.zarr"
    record_as_ranks(path, monkeypatch, record)
    with xr.open_dataset(path, engine="spikestore") as ds:
        var = ds["output/l"]
        assert ds["output/l:neuron"].values.tolist() == [3, 7, 11] and ds["output/l:batch"].values.tolist() == [0, 2]
        assert ds["output/l:rank"].values.tolist() == [0, 1] * 3
        assert var.attrs["layer"] == "l" and var.attrs["ranks"] == "0,1" and var.attrs["encoding"] == "bits,raw"
        assert var.dims == ("output/l:record", "output/l:time", "output/l:batch", "output/l:neuron")
        with spikestore.open(path) as run:
            np.testing.assert_array_equal(var.values, run["output/l"][:])


@pytest.mark.slow  # spawns processes
def test_importing_the_engine_imports_neither_torch_nor_the_storage_libraries():
    code = ("import sys; import xarray; import spikestore._integrations.xarray_engine; "
            "print(sorted(m for m in ('torch', 'zarr', 'h5py', 'spikestore._read.run', "
            "'spikestore._read.stream', 'spikestore._read.segment', 'spikestore._read.reader') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    listing = subprocess.run([sys.executable, "-c", "import sys, xarray; xarray.backends.list_engines(); "
                              "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert listing.stdout.strip() == "False"


def test_guess_can_open_recognises_zarr_stores_only(tmp_path):
    """Zarr stores are folders with a spikestore root document; other engines keep HDF5 files."""
    from spikestore._integrations.xarray_engine import SpikestoreBackendEntrypoint

    entry = SpikestoreBackendEntrypoint()
    write_mixed(tmp_path / "run.zarr")
    write_mixed(tmp_path / "run.h5")
    assert entry.guess_can_open(tmp_path / "run.zarr") is True
    assert entry.guess_can_open(str(tmp_path / "run.zarr")) is True
    assert entry.guess_can_open(tmp_path / "nothing.zarr") is False
    assert entry.guess_can_open(tmp_path) is False
    assert entry.guess_can_open(tmp_path / "run.h5") is False
    assert entry.guess_can_open(object()) is False
