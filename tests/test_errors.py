"""Every error spikestore raises on purpose is a SpikestoreError, and also the built-in it means."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import spikestore
from spikestore import errors
from spikestore.codecs import decode_spikes, encode_spikes


def test_every_error_class_is_in_the_tree_and_exported():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.SpikestoreError), name
    documented = errors.__doc__
    assert all(name in documented for name in errors.__all__)
    assert [n for n in errors.__all__ if getattr(spikestore, n, None) is not getattr(errors, n)] == []


def test_an_out_of_range_record_is_a_record_index_error(tmp_path):
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/1", np.ones(3))
    s = spikestore.open(tmp_path / "s.zarr")["output/1"]
    with pytest.raises(errors.RecordIndexError, match="record 5 out of range") as info:
        s[5]
    assert isinstance(info.value, IndexError)
    assert [r.tolist() for r in s] == [[1.0, 1.0, 1.0]]  # iteration still ends on IndexError


def test_a_damaged_spike_chunk_is_a_checksum_error_and_a_value_error():
    enc = encode_spikes(np.packbits(np.random.default_rng(0).random(4000) < 0.05, bitorder="little"))
    with pytest.raises(errors.ChecksumError) as info:
        decode_spikes(enc[:5])
    assert isinstance(info.value, ValueError)  # numcodecs' contract for a codec that cannot decode
    with pytest.raises(errors.FormatError, match="upgrade"):
        decode_spikes(bytes([99]) + enc[1:])


def test_a_missing_extra_is_a_missing_dependency_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    from spikestore import plot

    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/1", np.ones((2, 5), np.float32))
    with pytest.raises(errors.MissingDependencyError, match=r"spikestore\[plot\]") as info:
        plot.raster(spikestore.open(tmp_path / "s.zarr")["output/1"], 0)
    assert isinstance(info.value, ImportError)


def test_a_chunk_this_user_may_not_read_is_access_denied_not_damage(tmp_path, monkeypatch):
    # (root reads every file whatever its mode, so the refusal is injected where the file is opened)
    import os

    from spikestore import verify

    path = tmp_path / "s.zarr"
    with spikestore.Store(path, chunk_bytes=64) as store:
        for step in range(4):
            store.set_step(step)
            store.append("output/1", np.full(16, step, np.float32))
    run = spikestore.open(path)
    real_open = os.open

    def no_chunks(p, *args, **kwargs):
        if "/seg0" in str(p) and "zarr.json" not in str(p):
            raise PermissionError(13, "Permission denied (injected)", str(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_chunks)
    with pytest.raises(errors.ReadOnlyError, match="permission denied reading a file of the store") as info:
        run["output/1"][2]
    assert isinstance(info.value, PermissionError) and info.value.errno == 13
    assert not isinstance(info.value, errors.DamagedStoreError)
    with pytest.raises(errors.ReadOnlyError, match="verify stopped, the storage failed") as stopped:
        verify(path)
    assert stopped.value.errno == 13 and "/seg0" in stopped.value.filename  # errno and file kept
    assert str(stopped.value).count("[Errno 13]") == 1
    monkeypatch.undo()
    np.testing.assert_array_equal(run["output/1"][2], np.full(16, 2, np.float32))
    assert verify(path) == []


def test_a_store_deleted_while_a_run_reads_it_is_not_found_not_damage(tmp_path):
    import shutil

    path = tmp_path / "s.zarr"
    with spikestore.Store(path, chunk_bytes=64) as store:
        for step in range(4):
            store.set_step(step)
            store.append("output/1", np.full(16, step, np.float32))
    s = spikestore.open(path)["output/1"]
    shutil.rmtree(path)
    with pytest.raises(errors.StoreNotFoundError, match="deleted"):
        s[3]


def test_a_lost_root_with_its_groups_still_there_is_damage_not_a_deleted_store(tmp_path):
    path = tmp_path / "s.zarr"
    with spikestore.Store(path, mode="w", chunk_bytes=64) as store:
        for step in range(6):
            store.set_step(step)
            store.append("output/a", np.full(16, step, np.float32))
    run = spikestore.open(path)
    s = run["output/a"]
    (path / "zarr.json").rename(path / "zarr.json.moved")
    chunk = next(p for p in (path / "output").rglob("c*") if p.is_file() and "seg" in str(p))
    chunk.unlink()
    with pytest.raises(errors.DamagedStoreError, match=r"zarr.json"):
        s[:]
    run.close()


def test_an_hdf5_store_deleted_while_a_run_reads_it_is_not_found_not_damage(tmp_path):
    path = tmp_path / "s.h5"
    with spikestore.Store(path) as store:
        store.append("output/1", np.ones(16, np.float32))
    run = spikestore.open(path)
    path.unlink()
    with pytest.raises(errors.StoreNotFoundError, match="deleted"):
        run.refresh()
    run.close()
