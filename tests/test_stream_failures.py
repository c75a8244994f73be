"""One bad stream costs only itself: the others keep recording, the error is never silent."""

from __future__ import annotations

import errno
import time

import numpy as np
import pytest

import spikestore
from spikestore import StreamFailedError, WriterError, verify
from spikestore._write import sink as sink_module
from spikestore._write.assembly import StreamWriter


def _steps(store: spikestore.Store, steps: range, *, bad: bool = True) -> None:
    for step in steps:
        store.set_step(step)
        store.append("output/good", np.full(4, float(step)))
        if bad:
            store.append("output/bad", np.full(3, float(step)))


@pytest.mark.parametrize("where", ["storing", "preparing"])
def test_a_stream_whose_record_cannot_be_stored_stops_alone(store_path, monkeypatch, where):
    def boom(key: str, step: int) -> None:
        if key == "output/bad" and step == 2:
            raise ValueError("cannot encode this record (injected)")

    if where == "storing":  # inside the stream's chunk buffers: what was not committed is lost
        real_add = StreamWriter.add
        monkeypatch.setattr(StreamWriter, "add", lambda self, p, step, call, t: (
            boom(self.key, step), real_add(self, p, step, call, t)))
    else:  # before the stream changed: what it had is committed first
        real_prepare = sink_module.prepare
        monkeypatch.setattr(sink_module, "prepare", lambda frame, *a, **k: (
            boom(frame.key, frame.step), real_prepare(frame, *a, **k))[1])
    store = spikestore.Store(store_path)
    _steps(store, range(2))
    if where == "storing":
        store.flush()  # steps 0 and 1 committed
    _steps(store, range(2, 3))
    with pytest.raises(StreamFailedError, match=r"stream 'output/bad' .* at step 2: ValueError: cannot encode") as info:
        store.flush()  # the good stream is committed first
    assert info.value.stream == "output/bad" and info.value.step == 2
    assert isinstance(info.value.__cause__, ValueError) and isinstance(info.value, WriterError)
    assert len(spikestore.open(store_path)["output/good"]) == 3
    for step in range(3, 5):  # the good stream goes on; the failed one refuses every record
        store.set_step(step)
        store.append("output/good", np.full(4, float(step)))
        with pytest.raises(StreamFailedError, match="output/bad"):
            store.append("output/bad", np.full(3, float(step)))
    store.close()  # nothing left to report
    run = spikestore.open(store_path)
    assert run.writer["status"] == "closed"
    assert "cannot encode" in run.writer["failed_streams"]["output/bad"]
    assert [r[0] for r in run["output/good"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r[0] for r in run["output/bad"]] == [0.0, 1.0]  # its committed prefix, intact
    assert verify(store_path) == []


def test_the_failure_reaches_the_next_call_of_any_kind_once(store_path, monkeypatch):
    real_add = StreamWriter.add

    def add(self, p, step, call, t):
        if self.key == "output/bad":
            raise KeyError("a bug in one stream's path")
        return real_add(self, p, step, call, t)

    monkeypatch.setattr(StreamWriter, "add", add)
    store = spikestore.Store(store_path)
    _steps(store, range(1))
    with pytest.raises(StreamFailedError):
        store.flush()
    store.set_step(1)  # reported once: later calls go through
    store.append("output/good", np.ones(4))
    store.close()
    assert len(spikestore.open(store_path)["output/good"]) == 2


def test_a_full_disk_still_stops_every_stream(store_path, monkeypatch):
    real_add = StreamWriter.add

    def add(self, p, step, call, t):
        if step == 1:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real_add(self, p, step, call, t)

    monkeypatch.setattr(StreamWriter, "add", add)
    store = spikestore.Store(store_path)
    _steps(store, range(1))
    store.flush()
    _steps(store, range(1, 2))
    with pytest.raises(WriterError) as info:
        store.flush()
    assert not isinstance(info.value, StreamFailedError) and info.value.__cause__.errno == errno.ENOSPC
    with pytest.raises(WriterError):
        store.close()
    assert spikestore.open(store_path).writer["status"] == "failed"


def _fail_bad_at(monkeypatch, step_to_fail: int) -> None:
    real_prepare = sink_module.prepare

    def prepare(frame, *a, **k):
        if frame.key == "output/bad" and frame.step == step_to_fail:
            raise ValueError("cannot encode this record (injected)")
        return real_prepare(frame, *a, **k)

    monkeypatch.setattr(sink_module, "prepare", prepare)


def test_stream_info_for_a_failed_stream_is_refused_and_its_records_stay(store_path, monkeypatch):
    _fail_bad_at(monkeypatch, 2)
    store = spikestore.Store(store_path)
    _steps(store, range(3))
    with pytest.raises(StreamFailedError):
        store.flush()
    with pytest.raises(StreamFailedError):
        store.set_stream_info("output/bad", attrs={"late": 1})
    store.close()
    assert [r[0] for r in spikestore.open(store_path)["output/bad"]] == [0.0, 1.0]


def test_a_record_of_a_healthy_stream_is_never_refused_for_another_streams_failure(store_path, monkeypatch):
    _fail_bad_at(monkeypatch, 1)
    store = spikestore.Store(store_path)
    _steps(store, range(2))
    failures = store._writer.failures  # (wait for the writer thread: the failure is pending, not reported)
    deadline = time.monotonic() + 60
    while not failures.failed("output/bad") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert failures.failed("output/bad")
    store.append("output/good", np.full(4, 9.0))  # stored, whatever failed elsewhere
    with pytest.raises(StreamFailedError, match="output/bad"):
        store.set_step(2)  # reported at the next step
    store.close()
    assert [r[0] for r in spikestore.open(store_path)["output/good"]] == [0.0, 1.0, 9.0]
