"""The minimal read path, the one chunk iterator, the reader's public helpers, and damage detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import count_chunk_reads
from hypothesis import given
from hypothesis import strategies as st

import spikestore
from spikestore import DamagedStoreError, FormatError, StoreClosedError
from spikestore._read.segment import chunk_bounds, iter_blocks  # (the chunk arithmetic itself: no public path)


def _write(path, n=20):
    with spikestore.Store(path, chunk_bytes=64) as store:
        for i in range(n):
            store.set_step(i)
            store.append("output/x", (torch.arange(40) % (i + 2) == 0).float())
    return path


def _reference(n=20):
    return np.stack([(np.arange(40) % (i + 2) == 0).astype(np.float32) for i in range(n)])


def test_indexing_forms(store_path):
    s = spikestore.open(_write(store_path))["output/x"]
    ref = _reference()
    np.testing.assert_array_equal(s[-1], ref[-1])
    np.testing.assert_array_equal(s[3:17:2], ref[3:17:2])
    np.testing.assert_array_equal(s[[5, 1, 19]], ref[[5, 1, 19]])
    np.testing.assert_array_equal(s[np.arange(20) % 2 == 0], ref[::2])
    np.testing.assert_array_equal(np.stack(list(s)), ref)
    with pytest.raises(IndexError):
        s[20]


# -- the one chunk iterator ---------------------------------------------------------------
@given(first=st.integers(0, 50), count=st.integers(0, 60), rpc=st.integers(1, 9),
       start=st.integers(0, 120), length=st.integers(0, 120), step=st.integers(1, 12))
def test_chunk_bounds_cover_the_range_without_crossing_a_chunk(first, count, rpc, start, length, step):
    pieces = list(chunk_bounds(first, count, rpc, start, start + length, step))
    lo, hi = max(start, first), min(start + length, first + count)
    covered = [i for a, b, _ in pieces for i in range(a, b)]
    assert covered == list(range(lo, hi))  # every record once, in order, nothing outside
    for a, b, c in pieces:
        assert 0 < b - a <= step
        assert (a - first) // rpc == (b - 1 - first) // rpc == c  # inside one stored chunk


def test_blocks_obey_their_bounds_and_read_what_they_cover(store_path):
    s = spikestore.open(_write(store_path))["output/x"]
    ref = _reference()
    rpc = s.segments[0].chunk_records
    assert 1 < rpc < 20  # several chunks, so the bounds matter
    whole = list(s.segments[0].blocks())
    assert [len(b) for b in whole] == [min(rpc, 20 - k) for k in range(0, 20, rpc)]
    for bounds in ({"max_records": 2}, {"max_values": 100}, {"max_values": 1}):
        blocks = list(iter_blocks(s.segments, 3, 17, **bounds))
        assert [i for b in blocks for i in range(b.start, b.stop)] == list(range(3, 17))
        limit = bounds.get("max_records") or max(1, bounds["max_values"] // 40)
        assert all(len(b) <= limit for b in blocks)
        for b in blocks:
            np.testing.assert_array_equal(b.values(), ref[b.start:b.stop])
            assert b.rows().shape == (len(b), *s.segments[0].stored_shape)  # still packed
    with pytest.raises(spikestore.InvalidArgumentError, match="max_values must be >= 1"):
        list(iter_blocks(s.segments, max_values=0))


def test_a_block_reads_its_chunk_only_when_asked(store_path, monkeypatch):
    path = _write(store_path)
    reads = count_chunk_reads(monkeypatch, path)
    s = spikestore.open(path)["output/x"]
    blocks = list(s.segments[0].blocks())
    assert reads == []
    blocks[1].values()
    assert [c for node, c in reads if node.endswith("seg000000")] == [1]


# -- the reader's public helpers ----------------------------------------------------------
def test_segment_of_index_nbytes_and_layout(store_path):
    run = spikestore.open(_write(store_path))
    s = run["output/x"]
    assert s.segment_of(-1) is s.segments[-1] and s.segment_of(0) is s.segments[0]
    with pytest.raises(IndexError, match="record 20 out of range"):
        s.segment_of(20)
    np.testing.assert_array_equal(s.index("step"), np.arange(20))
    assert s.index("call").tolist() == [0] * 20 and not s.index("step").flags.writeable
    with pytest.raises(spikestore.InvalidArgumentError, match="step, call, time"):
        s.index("nope")
    assert 0 < s.segments[0].nbytes() < s.nbytes() <= run.nbytes("output/x") < run.nbytes()
    assert s.run is run
    assert s.layout.step_mode is None and s.dims == ("dim_0",)  # appended by hand: nothing known
    s.dims = ("neuron",)
    assert s.segments[0].dims == ("neuron",)
    run.close()


def test_a_closed_run_refuses_to_read(store_path):
    run = spikestore.open(_write(store_path))
    s = run["output/x"]
    run.close()
    with pytest.raises(StoreClosedError, match="closed"):
        s[0]
    with pytest.raises(StoreClosedError):
        run["output/x"]
    run.close()  # idempotent


def test_refresh_sees_records_committed_since_opening(store_path):
    store = spikestore.Store(store_path, mode="w", chunk_bytes=64)
    store.set_step(0)
    store.append("output/x", np.ones(40, np.float32))
    store.flush()
    run = spikestore.open(store_path)
    s = run["output/x"]
    assert len(s) == 1
    for i in range(1, 5):
        store.set_step(i)
        store.append("output/x", np.full(40, i, np.float32))
    store.close()
    assert len(s) == 1
    run.refresh()
    assert len(s) == 5 and s.steps.tolist() == list(range(5))
    np.testing.assert_array_equal(s[4], np.full(40, 4, np.float32))
    run.close()


# -- damage (Zarr: its chunks are files a test can delete or alter) -----------------------
def test_a_missing_chunk_inside_the_committed_range_is_damage(tmp_path):
    path = _write(tmp_path / "s.zarr")
    (path / "output/x/seg000000/c.1.0").unlink()
    s = spikestore.open(path)["output/x"]
    s[0]
    with pytest.raises(DamagedStoreError, match=r"chunk 1 .*missing"):
        s[s.segments[0].chunk_records]


def test_a_corrupt_chunk_fails_its_checksum(tmp_path):
    path = _write(tmp_path / "s.zarr")
    chunk = path / "output/x/seg000000/c.0.0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(DamagedStoreError, match="corrupt"):
        spikestore.open(path)["output/x"][0]


def test_invalid_metadata_is_a_format_error_not_a_crash(tmp_path):
    path = _write(tmp_path / "s.zarr")
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["spikestore"]["format_version"] = "one"
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="format_version"):
        spikestore.open(path)
    meta["attributes"]["spikestore"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="upgrade"):
        spikestore.open(path)
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(FormatError):
        spikestore.open(path)
