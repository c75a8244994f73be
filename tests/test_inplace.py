"""A record changed in place before the writer stored it stops its stream, as any record that cannot be stored.

``Store.append(t, copy=False)`` hands the writer the tensor itself. If the
tensor's version counter moved before the writer read it, or the spike codec
saw a chunk change while encoding it, the stream fails at that record: its
earlier records stay stored, the training thread gets a
:class:`~spikestore.errors.StreamFailedError` naming stream and step at its
next call, later records of the stream are refused, and the other streams go
on. So every index ``append`` returned is exact: a record is stored at its
index or its stream reports it missing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import writer_held

import spikestore
from spikestore.codecs import _spikes
from spikestore.errors import InPlaceModificationError, StreamFailedError


def test_a_record_changed_in_place_fails_its_stream_at_that_step(store_path):
    store = spikestore.Store(store_path)
    a = torch.rand(1000)
    store.set_step(0)
    assert store.append("v/1", a.clone(), copy=False) == 0
    store.flush()
    with writer_held(store):
        store.set_step(1)
        t = torch.rand(1000)
        assert store.append("v/1", t, copy=False) == 1
        t.add_(1.0)  # bumps the version counter before the writer reads t
        store.set_step(2)
        assert store.append("v/1", torch.rand(1000), copy=False) == 2  # queued behind it: never stored
        other = torch.ones(3)
        assert store.append("v/2", other, copy=False) == 0  # another stream, untouched
    with pytest.raises(StreamFailedError, match=r"'v/1'.*step 1.*InPlaceModificationError") as caught:
        store.flush()
    assert (caught.value.stream, caught.value.step) == ("v/1", 1)
    with pytest.raises(StreamFailedError, match="'v/1'"):  # later records are refused, not lost silently
        store.append("v/1", torch.rand(1000))
    assert store.append("v/2", torch.ones(3)) == 1
    store.close()
    with spikestore.open(store_path) as run:
        s = run["v/1"]
        assert s.steps.tolist() == [0]
        np.testing.assert_array_equal(s[0], a.numpy())
        np.testing.assert_array_equal(run["v/2"][:], np.ones((2, 3), np.float32))
        assert run.writer["status"] == "closed"
        assert "InPlaceModificationError" in run.writer["failed_streams"]["v/1"]


def test_the_failure_comes_at_the_next_call_of_any_kind(tmp_path):
    store = spikestore.Store(tmp_path / "s.zarr")
    with writer_held(store):
        t = torch.rand(64, dtype=torch.float64)
        assert store.append("grad/1", t, copy=False) == 0
        t.mul_(2)
    with pytest.raises(StreamFailedError, match=r"stream 'grad/1'.*step 0"):
        store.flush()
    store.close()  # reported once: closing raises nothing more
    with spikestore.open(tmp_path / "s.zarr") as run:
        assert len(run["grad/1"]) == 0 and "grad/1" in run.writer["failed_streams"]


def test_returned_indices_match_the_stored_records(tmp_path):
    """Every index append returned for a stored record is that record's position."""
    rng = np.random.default_rng(1)
    values = [rng.random(16) for _ in range(6)]
    store = spikestore.Store(tmp_path / "s.zarr")
    indices = []
    with writer_held(store):
        for step, v in enumerate(values):
            store.set_step(step)
            t = torch.from_numpy(v.copy())
            indices.append(store.append("v/1", t, copy=False))
            if step == 3:
                t.sub_(1)
    assert indices == list(range(6))
    with pytest.raises(StreamFailedError, match="step 3"):
        store.close()
    with spikestore.open(tmp_path / "s.zarr") as run:
        s = run["v/1"]
        assert s.steps.tolist() == [0, 1, 2]
        for i in range(3):
            np.testing.assert_array_equal(s[indices[i]], values[i])


def test_copy_true_is_the_default_and_a_snapshot(tmp_path):
    t = torch.rand(100, dtype=torch.float64)
    ref = t.clone()
    with spikestore.Store(tmp_path / "s.zarr") as store, writer_held(store):
        store.append("v/1", t)
        t.numpy()[:] = -1.0  # invisible to the version counter: only a copy protects
    np.testing.assert_array_equal(spikestore.open(tmp_path / "s.zarr")["v/1"][0], ref.numpy())


def test_a_chunk_changed_while_the_spike_codec_encodes_it_fails_its_stream(tmp_path, monkeypatch):
    """The spike codec's own check, simulated: its buffer is the writer's private chunk
    buffer, which nothing else writes, so the check cannot fire for real on this path."""
    calls = []
    real = _spikes._gap_bytes

    def changed_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise InPlaceModificationError("the spike count of a chunk changed while it was being encoded")
        return real(*args, **kwargs)

    monkeypatch.setattr(_spikes, "_gap_bytes", changed_once)
    rng = np.random.default_rng(0)
    records = [(rng.random(64) < 0.1).astype(np.float32) for _ in range(5)]
    # 64 spikes pack into 8 bytes: two records a chunk, so the chunk is encoded at the second one.
    store = spikestore.Store(tmp_path / "s.zarr", chunk_bytes=16)
    for step, r in enumerate(records[:2]):
        store.set_step(step)
        store.append("output/1", torch.from_numpy(r))
        store.append("v/2", torch.full((4,), 0.5))  # raw values: the spike codec never sees them
    with pytest.raises(StreamFailedError, match=r"'output/1'.*step 1"):
        store.close()
    with spikestore.open(tmp_path / "s.zarr") as run:
        s = run["output/1"]
        assert s.steps.tolist() == [0]  # the record before it, committed as the stream stopped
        np.testing.assert_array_equal(s[0], records[0])
        assert run["v/2"].steps.tolist() == [0, 1]
        assert calls and list(run.writer["failed_streams"]) == ["output/1"]
