"""An in-place modification drops and counts that record; recording goes on.

``Store.append(t, copy=False)`` hands the writer the tensor itself. If the
tensor's version counter moved before the writer read it, or the spike codec
saw a chunk change while encoding it, that one record is not stored, the
root document counts it (``writer.modified``), the training thread gets an
:class:`~spikestore.errors.InPlaceModificationWarning` naming stream and step
at its next call, and the stream keeps recording.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from helpers import writer_held

import spikestore
from spikestore.codecs import _spikes
from spikestore.errors import InPlaceModificationError, InPlaceModificationWarning


def test_a_record_changed_in_place_is_dropped_counted_and_warned(store_path):
    store = spikestore.Store(store_path)
    a = torch.rand(1000)
    store.set_step(0)
    assert store.append("v/1", a.clone(), copy=False) == 0
    with writer_held(store):
        store.set_step(1)
        t = torch.rand(1000)
        assert store.append("v/1", t, copy=False) == 1
        t.add_(1.0)  # bumps the version counter before the writer reads t
        store.append("v/2", torch.ones(3), copy=False)  # another stream, untouched
    with pytest.warns(InPlaceModificationWarning, match=r"'v/1'.*step 1") as caught:
        store.flush()
    assert [(w.message.stream, w.message.step) for w in caught] == [("v/1", 1)]
    store.set_step(2)
    c = torch.rand(1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once only
        assert store.append("v/1", c, copy=False) == 1  # the dropped record took no index
        store.close()
    run = spikestore.open(store_path)
    s = run["v/1"]
    assert s.steps.tolist() == [0, 2]
    np.testing.assert_array_equal(s[0], a.numpy())
    np.testing.assert_array_equal(s[1], c.numpy())
    assert len(run["v/2"]) == 1
    assert run.writer["modified"] == 1 and run.writer["status"] == "closed"
    assert "failed_streams" not in run.writer
    run.close()
    with spikestore.Store(store_path, mode="a") as again:  # the count adds up over sessions, like dropped
        again.append("v/1", torch.rand(1000))
    assert spikestore.open(store_path).writer["modified"] == 1


def test_the_warning_comes_at_the_next_call_of_any_kind(tmp_path):
    store = spikestore.Store(tmp_path / "s.zarr")
    with writer_held(store):
        t = torch.rand(64, dtype=torch.float64)
        store.append("grad/1", t, copy=False)
        t.mul_(2)
    while store._writer._queue.pending:  # the writer has seen it; nothing was said yet
        time.sleep(0.01)
    with pytest.warns(InPlaceModificationWarning, match=r"stream 'grad/1', step 0"):
        store.set_step(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.close()
    assert spikestore.open(tmp_path / "s.zarr").writer["modified"] == 1


def test_many_drops_make_one_warning_per_call_and_all_are_counted(tmp_path):
    store = spikestore.Store(tmp_path / "s.zarr")
    with writer_held(store):
        for step in range(5):
            store.set_step(step)
            t = torch.rand(32)
            store.append("v/1", t, copy=False)
            t.sub_(1)
        store.set_step(5)
        store.append("v/1", torch.rand(32), copy=False)
    with pytest.warns(InPlaceModificationWarning, match="5 records") as caught:
        store.close()
    assert len(caught) == 1 and len(caught[0].message.records) == 5
    run = spikestore.open(tmp_path / "s.zarr")
    assert run.writer["modified"] == 5 and run["v/1"].steps.tolist() == [5]


def test_copy_true_is_the_default_and_a_snapshot(tmp_path):
    t = torch.rand(100, dtype=torch.float64)
    ref = t.clone()
    with spikestore.Store(tmp_path / "s.zarr") as store, writer_held(store):
        store.append("v/1", t)
        t.numpy()[:] = -1.0  # invisible to the version counter: only a copy protects
    np.testing.assert_array_equal(spikestore.open(tmp_path / "s.zarr")["v/1"][0], ref.numpy())


def test_a_chunk_changed_while_the_spike_codec_encodes_it_drops_that_record(tmp_path, monkeypatch):
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
    for step, r in enumerate(records):
        store.set_step(step)
        store.append("output/1", torch.from_numpy(r))
    with pytest.warns(InPlaceModificationWarning, match=r"'output/1'.*step 1"):
        store.close()
    run = spikestore.open(tmp_path / "s.zarr")
    s = run["output/1"]
    assert s.steps.tolist() == [0, 2, 3, 4] and run.writer["modified"] == 1
    for i, step in enumerate([0, 2, 3, 4]):
        np.testing.assert_array_equal(s[i], records[step])
    assert calls and "failed_streams" not in run.writer
