"""Writer failures surface in the training thread; nothing hangs (docs/reliability.md)."""

from __future__ import annotations

import errno
import threading

import numpy as np
import pytest
import torch

import spikestore
from spikestore import WriterError
from spikestore.backends._zarr import ZarrBackend
from spikestore.backends.hdf5 import HDF5Backend


@pytest.fixture
def failing_backend(monkeypatch):
    """Make the n-th chunk write raise the given OSError."""

    def arm(after: int, err: int, gate: threading.Event | None = None):
        orig = ZarrBackend.write_chunk
        calls = {"n": 0}

        def write_chunk(self, node, chunk, data, **kw):
            calls["n"] += 1
            if calls["n"] > after:
                if gate is not None:
                    gate.wait(10)
                raise OSError(err, "simulated: " + errno.errorcode[err])
            return orig(self, node, chunk, data, **kw)

        monkeypatch.setattr(ZarrBackend, "write_chunk", write_chunk)

    return arm


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_disk_errors_surface_at_the_next_call_with_the_cause_chained(tmp_path, failing_backend, err):
    failing_backend(after=3, err=err)
    store = spikestore.Store(tmp_path / "s.zarr", chunk_bytes=64)
    with pytest.raises(WriterError) as info:
        for step in range(10_000):
            store.set_step(step)
            store.append("output/1", torch.ones(64, 8))
        store.flush()  # (a busy machine may queue every record before the writer fails)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == err
    assert "simulated" in str(info.value)
    with pytest.raises(WriterError):  # keeps failing, never pretends to work
        store.flush()
    with pytest.raises(WriterError):
        store.close()
    store.close()  # second close is quiet
    run = spikestore.open(tmp_path / "s.zarr")  # what was committed is readable
    assert run.writer["status"] == "failed" and "simulated" in run.writer["error"]
    s = run["output/1"]  # listed before its first chunk was written
    for i in range(len(s)):
        np.testing.assert_array_equal(s[i], np.ones((64, 8), np.float32))


def test_flush_raises_instead_of_hanging(tmp_path, failing_backend):
    failing_backend(after=0, err=errno.ENOSPC)
    store = spikestore.Store(tmp_path / "s.zarr")
    store.append("output/1", torch.ones(8))
    with pytest.raises(WriterError):
        store.flush(timeout=30)


def test_blocked_producer_is_released_when_the_writer_dies(tmp_path, failing_backend):
    gate = threading.Event()
    failing_backend(after=0, err=errno.ENOSPC, gate=gate)
    # One record fills the queue; the writer holds it until the gate opens.
    store = spikestore.Store(tmp_path / "s.zarr", max_pending_bytes=4096, chunk_bytes=1)
    outcome: dict[str, BaseException | None] = {}

    def producer():
        try:
            for _ in range(100):
                store.append("output/1", torch.ones(1024))
            outcome["exc"] = None
        except BaseException as exc:  # noqa: BLE001
            outcome["exc"] = exc

    t = threading.Thread(target=producer)
    t.start()
    t.join(0.5)
    assert t.is_alive(), "the producer should be blocked on the full queue"
    gate.set()
    t.join(20)
    assert not t.is_alive(), "the blocked producer was not released"
    assert isinstance(outcome["exc"], WriterError)


def test_block_policy_loses_nothing_under_a_tiny_queue(tmp_path):
    path = tmp_path / "s.zarr"
    with spikestore.Store(path, max_pending_bytes=1, chunk_bytes=256) as store:
        for i in range(300):
            store.append("v/1", np.full(16, i, dtype=np.int32))
    s = spikestore.open(path)["v/1"]
    assert len(s) == 300
    np.testing.assert_array_equal(s[:][:, 0], np.arange(300))


def test_bug_in_the_writer_thread_surfaces_too(tmp_path, monkeypatch):
    from spikestore._write import assembly

    def boom(*a, **k):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(assembly.StreamWriter, "add", boom)
    store = spikestore.Store(tmp_path / "s.zarr")
    store.append("output/1", torch.ones(4))
    with pytest.raises(WriterError) as info:
        store.close()
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_records_are_published_by_commits_only(tmp_path, monkeypatch):
    """Full chunks on disk stay invisible until a commit: readers see counts move only at
    flushes (a commit rewrites ~5 files a stream, so there is none per chunk)."""
    written = threading.Event()
    real_write = ZarrBackend.write_chunk

    def write_chunk(self, node, chunk, data, **kw):
        real_write(self, node, chunk, data, **kw)
        if node.endswith("seg000000"):
            written.set()

    monkeypatch.setattr(ZarrBackend, "write_chunk", write_chunk)
    path = tmp_path / "s.zarr"
    with spikestore.Store(path, flush_interval=3600, chunk_bytes=64) as store:
        for i in range(10):  # 8-byte packed records: 8 per chunk, so one full chunk at least
            store.set_step(i)
            store.append("output/1", torch.ones(64))
        assert written.wait(30), "the writer never wrote the full chunk"
        first = spikestore.open(path)
        assert "output/1" not in first.streams or len(first["output/1"]) == 0
        store.flush()
        assert len(spikestore.open(path)["output/1"]) == 10


def test_stream_info_set_after_the_last_record_is_committed(tmp_path):
    path = tmp_path / "s.zarr"
    with spikestore.Store(path) as store:
        store.append("output/1", torch.ones(4))
        store.flush()
        store.set_stream_info("output/1", attrs={"late": 1})
    assert spikestore.open(path)["output/1"].attrs == {"late": 1}


@pytest.fixture
def stalled_writer(monkeypatch):
    """Hold every chunk write until ``gate`` opens, which happens once a flush or close waits
    for the writer (so the backlog is still whole then), and log the thread of each write."""
    from spikestore._write import queue as queue_module
    from spikestore._write import sink as sink_module
    from spikestore._write import threads as threads_module

    monkeypatch.setattr(threads_module, "drain_threads", lambda: 3)  # whatever this machine has
    gate = threading.Event()
    threads: list = []
    armed = {"fail_after_first_thread": False, "open_gate_on_wait": True}
    real_put = queue_module.ByteQueue.put

    def put(self, item, nbytes, *, block, waited_on=False):
        ok = real_put(self, item, nbytes, block=block, waited_on=waited_on)
        if waited_on and armed["open_gate_on_wait"]:
            gate.set()
        return ok

    monkeypatch.setattr(queue_module.ByteQueue, "put", put)

    def stall(cls):
        orig = cls.write_chunk

        def write_chunk(self, node, chunk, data, **kw):
            gate.wait(10)
            threads.append(threading.current_thread())
            if armed["fail_after_first_thread"] and threads[-1] is not threads[0]:
                raise OSError(errno.ENOSPC, "simulated: ENOSPC")
            return orig(self, node, chunk, data, **kw)

        monkeypatch.setattr(cls, "write_chunk", write_chunk)

    stall(ZarrBackend)
    stall(HDF5Backend)
    orig_meta = sink_module.StreamSink.apply_meta

    def apply_meta(self, item):  # log how many records the stream holds when its info lands
        threads.append(("meta", item.attrs.get("last_step"), self.stream(item.key).count))
        return orig_meta(self, item)

    monkeypatch.setattr(sink_module.StreamSink, "apply_meta", apply_meta)
    return gate, threads, armed


def _writing_threads(threads: list) -> set:
    return {t for t in threads if isinstance(t, threading.Thread)}


def _backlog(store, steps=12):
    for step in range(steps):
        store.set_step(step)
        for layer in ("a", "b", "c"):
            store.append(f"output/{layer}", (torch.arange(64 * 8) % (step + 2) == 0).float().reshape(8, 64))
        store.set_stream_info("output/b", attrs={"last_step": step})


@pytest.mark.parametrize(("suffix", "wait"), [(".zarr", "close"), (".zarr", "flush"), (".h5", "close")])
def test_a_backlog_drains_on_several_threads_when_close_waits(tmp_path, stalled_writer, suffix, wait):
    _, threads, _ = stalled_writer
    path = tmp_path / f"s{suffix}"
    store = spikestore.Store(path, chunk_bytes=64)  # one 64-byte record a chunk
    _backlog(store)
    if wait == "flush":
        store.flush()
        assert len(spikestore.open(path)["output/c"]) == 12
    store.close()
    writers = _writing_threads(threads)
    assert len(writers) >= 2 and threading.current_thread() not in writers
    # each stream info lands after its step's record, before the next one
    assert [(m[1], m[2]) for m in threads if isinstance(m, tuple)] == [(i, i + 1) for i in range(12)]
    run = spikestore.open(path)
    for layer in ("a", "b", "c"):
        s = run[f"output/{layer}"]
        assert list(s.steps) == list(range(12))
        for step in range(12):
            want = (np.arange(64 * 8) % (step + 2) == 0).astype(np.float32).reshape(8, 64)
            np.testing.assert_array_equal(s[step], want)
    assert run["output/b"].attrs == {"last_step": 11}


def test_a_failure_on_a_drain_thread_reaches_the_caller(tmp_path, stalled_writer):
    gate, _, armed = stalled_writer
    path = tmp_path / "s.zarr"
    store = spikestore.Store(path, chunk_bytes=64)
    store.append("output/a", torch.ones(8, 64))
    store.flush()  # one committed record
    gate.clear()
    armed["fail_after_first_thread"] = True  # any write on a second thread fails
    _backlog(store)
    with pytest.raises(WriterError) as info:
        store.close()
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert len(spikestore.open(path)["output/a"]) >= 1  # still readable up to its last commit


def test_no_helper_writes_after_close_when_a_helper_cannot_start(tmp_path, stalled_writer, monkeypatch):
    """A helper that fails to start stops the writer, and close() returns only once the others are done."""
    from concurrent.futures import ThreadPoolExecutor

    _, threads, _ = stalled_writer
    real_submit = ThreadPoolExecutor.submit
    submits = {"n": 0}
    second_refused = threading.Event()
    started: list[threading.Thread] = []

    def submit(self, fn, *args, **kwargs):
        submits["n"] += 1
        if submits["n"] == 2:
            second_refused.set()
            raise RuntimeError("can't start new thread")
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", submit)
    stalled_write = ZarrBackend.write_chunk

    def busy_helper_write(self, *args, **kwargs):
        me = threading.current_thread()
        if me not in started:
            started.append(me)
        if me is not started[0]:  # the helper that did start is still busy when the next submit fails
            second_refused.wait(10)
        return stalled_write(self, *args, **kwargs)

    monkeypatch.setattr(ZarrBackend, "write_chunk", busy_helper_write)
    store = spikestore.Store(tmp_path / "s.zarr", chunk_bytes=64)
    _backlog(store)
    with pytest.raises(WriterError, match="can't start new thread"):
        store.close()
    # Every thread that wrote has ended: none can write after close() returned.
    assert _writing_threads(threads) and not any(t.is_alive() for t in _writing_threads(threads))


def test_durable_stores_commit_one_stream_at_a_time(tmp_path, stalled_writer, monkeypatch):
    """A durable commit's fsyncs must not cover another stream's half-done commit: no parallel commits."""
    from spikestore._write import assembly

    assert stalled_writer  # (the fixture stalls the writer; nothing of it is needed here)
    committers: list[threading.Thread] = []
    real_commit = assembly.StreamWriter.commit

    def commit(self, **kwargs):
        committers.append(threading.current_thread())
        return real_commit(self, **kwargs)

    monkeypatch.setattr(assembly.StreamWriter, "commit", commit)
    store = spikestore.Store(tmp_path / "s.zarr", chunk_bytes=64, durable=True)
    _backlog(store)
    store.close()
    assert len(committers) >= 3 and len(set(committers)) == 1 and committers[0] is not threading.current_thread()
