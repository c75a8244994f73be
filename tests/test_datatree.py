"""xarray.open_datatree(path, engine="spikestore"): one node per quantity and layer, as the store's groups."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from helpers import M_SEL, S_SEL, count_chunk_reads, same, write_mixed

import spikestore


@pytest.fixture
def mixed(store_path):
    return store_path, write_mixed(store_path)


def test_nodes_mirror_the_store_groups(mixed):
    path, written = mixed
    with xr.open_datatree(path, engine="spikestore") as tree:
        assert set(tree.children) == {"output", "v_seq", "grad_input", "x"}
        assert set(tree["output"].children) == {"fc", "s"}
        assert set(tree["x"].children) == {"int16", "bool", "bf16"}
        assert {node.path for node in tree.subtree if not node.children} == {f"/{k}" for k in written}
        node = tree["v_seq/fc"]
        assert list(node.data_vars) == ["v_seq"]
        assert node["v_seq"].dims == ("record", "time", "batch", "neuron")
        assert set(node.coords) == {"step", "call", "rank", "batch_size"}
        assert node["batch_size"].values.tolist() == [3] * 20 + [2] * 3
        assert node.attrs["stream"] == "v_seq/fc" and tree.attrs["format_version"] >= 1
        assert set(tree["x/int16"].coords) == {"step", "call", "rank"}   # no batch axis: no batch_size
        assert tree["output/s"]["output"].dims == ("record", "batch", "neuron")


def test_values_equal_open_dataset(mixed):
    path, written = mixed
    with xr.open_datatree(path, engine="spikestore") as tree, \
            xr.open_dataset(path, engine="spikestore") as ds:
        for key in written:
            quantity = key.split("/")[0]
            var = tree[key][quantity]
            flat = ds[key]
            assert var.shape == flat.shape and var.dtype == flat.dtype
            same(var.values, flat.values)
            for coord in ("step", "call", "batch_size"):
                if f"{key}:{coord}" in ds.coords:
                    same(tree[key][coord].values, ds[f"{key}:{coord}"].values)
        same(tree["x/bool"]["x"][3].values, written["x/bool"][3][1])


def test_open_datatree_reads_no_chunk_and_takes_the_engine_options(store_path, monkeypatch):
    write_mixed(store_path)
    reads = count_chunk_reads(monkeypatch, store_path)
    tree = xr.open_datatree(store_path, engine="spikestore", streams=["output/fc", "x/int16", "x/bool"],
                            drop_variables=["x/bool"])
    assert reads == []
    assert {n.path for n in tree.subtree} == {"/", "/output", "/output/fc", "/x", "/x/int16"}
    float(tree["output/fc"]["output"][21].sum())
    assert reads and all("output/fc" in node for node, _ in reads)
    tree.close()
    groups = xr.open_groups(store_path, engine="spikestore", streams=["output/fc"])
    assert set(groups) == {"/", "/output", "/output/fc"}
    groups["/"].close()
    chunked = xr.open_datatree(store_path, engine="spikestore", chunks={})
    assert chunked["output/fc"]["output"].chunks is not None
    chunked.close()


def test_odd_layer_names_and_streams_that_are_not_one_array(tmp_path):
    path = tmp_path / "odd.zarr"
    with spikestore.Store(path, mode="w") as store:
        store.set_stream_info("output/a/b", selection=S_SEL)
        store.set_stream_info("output/grow", selection=M_SEL)
        for step in range(3):
            store.set_step(step)
            store.append("output/a/b", np.ones((4 - step, 3), np.float32))
            store.append("output/grow", np.ones((2, 2, 3 + step), np.float32))  # the neuron axis changes
    with xr.open_datatree(path, engine="spikestore") as tree:
        assert set(tree["output"].children) == {"a%2Fb", "grow"}
        assert tree["output/a%2Fb"].attrs["layer"] == "a/b"
        assert tree["output/a%2Fb"]["batch_size"].values.tolist() == [4, 3, 2]
        grow = tree["output/grow"]
        assert sorted(grow.data_vars) == ["output#0", "output#1", "output#2"]
        assert grow["output#2"].dims == ("output#2:record", "output#2:time", "output#2:batch", "output#2:neuron")
        same(grow["output#2"].values[0], np.ones((2, 2, 5), np.float32))


def test_a_quantity_named_like_a_coordinate_gets_a_distinct_variable_name(tmp_path):
    path = tmp_path / "names.h5"
    with spikestore.Store(path, mode="w") as store:
        store.set_stream_info("step/l", selection=S_SEL)
        for step in range(2):
            store.set_step(step)
            store.append("step/l", np.full((3 - step, 2), step, np.float32))
            store.append("time/l", np.arange(4, dtype=np.int16))
    with xr.open_datatree(path, engine="spikestore") as tree:
        assert list(tree["step/l"].data_vars) == ["step_values"]
        assert tree["step/l"]["step"].values.tolist() == [0, 1]
        same(tree["step/l"]["step_values"].values[1, :2], np.full((2, 2), 1, np.float32))
        assert list(tree["time/l"].data_vars) == ["time_values"]
