"""The background writer thread (its byte-bounded queue is :mod:`spikestore._write.queue`).

The training thread only ever calls :meth:`Writer.submit`, which costs a lock
and a deque append unless the queue is full. Everything else (packing,
compression, file I/O, commits) happens on the writer thread, at nice 19.
While ``flush()`` or ``close()`` waits, the training thread's cores are idle,
so the writer then writes the streams of its backlog side by side on helper
threads (one stream per thread, each in its own order).

Failure handling follows tensorboard's ``EventFileWriter``: the thread saves
its exception, drains the queue so blocked producers wake up, and the next
call from the training thread (``submit``, ``flush``, ``close``) raises a
:class:`~spikestore.errors.WriterError` chained to the original exception.
A record that cannot be stored, a record changed in place before it was
stored included, stops its own stream only: the thread writes records into
a :class:`~spikestore._write.sink.StreamSink`, which holds that rule.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from typing import Any

from spikestore._failures import stops_writer
from spikestore._write import threads
from spikestore._write.capture import Frame
from spikestore._write.failures import QueueDrops, StreamFailures
from spikestore._write.flight import FlightRecorder
from spikestore._write.flight_state import FlightState
from spikestore._write.queue import ByteQueue, Flush, Mark, Meta, Stop
from spikestore._write.root import RootDocument
from spikestore._write.sink import StreamSink
from spikestore.backends import Backend
from spikestore.errors import (
    FlushTimeoutError,
    InvalidArgumentError,
    StoreClosedError,
    WriterError,
)

__all__ = ["Writer"]

_log = logging.getLogger("spikestore")


class Writer:
    """Owns the writer thread of one store.

    Parameters
    ----------
    backend
        The open, writable backend. The store owns it: the writer writes
        through it and never closes it.
    root
        The store's root document; the writer only reports new streams and
        records dropped by a full queue to it.
    streams
        Committed stream documents of a store opened for append.
    max_pending_bytes
        Bound on the bytes of records submitted but not yet written.
    on_full
        ``"block"`` (default: wait for room) or ``"drop"`` (drop the record,
        count it in the root document, warn once).
    flush_interval
        Seconds between automatic commits of partly filled chunks: the most
        a crash can lose.
    chunk_bytes
        Target size of one uncompressed chunk.
    flight
        A flight recorder: records are held in its ring and written only
        around triggers (:mod:`spikestore._write.flight_state`).
    """

    def __init__(self, backend: Backend, root: RootDocument, *,
                 streams: dict[str, dict[str, Any]] | None = None,
                 max_pending_bytes: int = 256 << 20, on_full: str = "block",
                 flush_interval: float = 5.0, chunk_bytes: int = 256 << 10,
                 level: int | None = None, flight: FlightRecorder | None = None) -> None:
        if on_full not in ("block", "drop"):
            raise InvalidArgumentError(f"on_full must be 'block' or 'drop', not {on_full!r}")
        if max_pending_bytes <= 0 or chunk_bytes <= 0 or flush_interval <= 0:
            raise InvalidArgumentError(
                "max_pending_bytes, chunk_bytes and flush_interval must be positive")
        self.backend = backend
        self._root = root
        self.on_full = on_full
        self.flush_interval = flush_interval
        self._queue = ByteQueue(max_pending_bytes)
        # Only backends that take writes from several threads at once drain a
        # backlog in parallel.
        self._helpers = threads.HelperThreads(threads.drain_threads() if backend.concurrent_writes else 1)
        self._error: BaseException | None = None
        #: Streams that stopped because one of their records could not be stored (each costs only itself).
        self.failures = StreamFailures(str(backend.path))
        self._stop: Stop | None = None
        self._closed = False
        #: Records dropped because the queue was full (``on_full="drop"``).
        self.drops = QueueDrops(str(backend.path), root.dropped)
        #: The flight recorder's state (``None``: every record is written).
        self.flight = None if flight is None else FlightState(flight, root.flight)
        if self.flight is not None:
            root.set_flight(self.flight.document())
        #: What the thread writes records into (one writer per stream).
        self.sink = StreamSink(backend, root, streams=streams or {}, chunk_bytes=chunk_bytes, level=level,
                               flight=self.flight, failures=self.failures, helpers=self._helpers)
        self._thread = threading.Thread(target=self._run, name="spikestore-writer", daemon=True)
        self._thread.start()

    # -- training-thread side ----------------------------------------------------
    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the writer thread, if any."""
        return self._error

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def check(self, *, report_streams: bool = True) -> None:
        """Raise :class:`WriterError` if the writer thread has failed (and, with
        ``report_streams``, a stream failure not reported yet)."""
        err = self._error
        if err is not None:
            raise WriterError(
                f"the spikestore writer for {self.backend.path} failed: "
                f"{type(err).__name__}: {err}. Records after the last successful flush "
                "may be missing; the store on disk stays readable up to its committed count."
            ) from err
        if self._closed:
            raise StoreClosedError(f"store {self.backend.path} is closed")
        if report_streams:
            self.failures.raise_pending()

    def submit(self, frame: Frame) -> bool:
        """Queue a frame; return False if it was dropped (``on_full="drop"``).

        Raises :class:`~spikestore.errors.StreamFailedError` for a record of
        a stream that failed. Failures of other streams are left for the
        caller to report once the record is accounted for.
        """
        self.check(report_streams=False)
        self.failures.refuse(frame.key)
        if not frame.dropped and self._queue.put(frame, frame.nbytes, block=self.on_full == "block"):
            return True  # (a dropped frame: refused by the full pinned pool of CUDA records)
        self.check()  # a dead writer explains the refusal
        self.drops.drop(self._queue.max_bytes)
        return False

    def update_stream(self, key: str, selection: dict[str, Any] | None,
                      attrs: dict[str, Any]) -> None:
        """Set a stream's selection/attrs document fields (in queue order)."""
        self.check(report_streams=False)
        self.failures.refuse(key)
        self._queue.put(Meta(key, selection, attrs), 0, block=True)
        self.failures.raise_pending()

    def mark(self, step: int, reason: str) -> None:
        """Queue a trigger of the flight recorder at ``step`` (in order with the records)."""
        self.check(report_streams=False)
        self._queue.put(Mark(step, reason), 0, block=True)

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything submitted so far is committed on disk.

        A stream that failed meanwhile is reported after the flush (the others are committed).
        """
        self.check(report_streams=False)
        req = Flush()
        self._queue.put(req, 0, block=True, waited_on=True)
        self._wait(req.done, timeout)
        self.failures.raise_pending()

    def _wait(self, event: threading.Event, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not event.wait(0.05):
            self.check(report_streams=False)
            if not self._thread.is_alive() and not event.is_set():
                raise WriterError(f"the spikestore writer for {self.backend.path} stopped")
            if deadline is not None and time.monotonic() > deadline:
                raise FlushTimeoutError(f"flush of {self.backend.path} did not finish in {timeout} s; "
                                        "the writer goes on, call flush() again to wait longer")
        self.check(report_streams=False)

    def close(self) -> None:
        """Flush, stop the thread, mark the writer closed. Idempotent.

        Raises :class:`WriterError` if the thread failed. The store then
        records the final status and closes the backend.
        """
        if self._closed:
            return
        try:
            if self._error is None:
                if self._stop is None:  # (a close interrupted before sent it already)
                    self._stop = Stop()
                    self._queue.put(self._stop, 0, block=True, waited_on=True)
                self._wait(self._stop.done, None)
            self._thread.join()
        except BaseException:
            if self._error is not None:
                # A failed writer stops on its own once its helpers are done:
                # wait, so nothing writes after the final status below.
                self._thread.join()
            raise
        finally:
            # Interrupted (Ctrl-C) while the thread still drains: not closed, so a
            # later close() (or the exit hook) waits for it and finishes the store.
            self._closed = not self._thread.is_alive()
        err = self._error
        if err is not None:
            self._closed = False  # let check() report the failure, not "closed"
            try:
                self.check()
            finally:
                self._closed = True
        self.failures.raise_pending()  # a stream that failed since the last call

    # -- writer-thread side --------------------------------------------------------
    def _run(self) -> None:
        threads.lower_priority()
        last_commit = time.monotonic()
        backlog: deque[Any] = deque()
        try:
            while True:
                if not backlog:
                    wait = self.flush_interval - (time.monotonic() - last_commit)
                    backlog.extend(self._queue.take_all(timeout=max(0.01, wait)))
                if self._queue.waiting and self._parallel:
                    # The training thread waits for a flush or close behind this
                    # backlog, so its cores are free: write streams side by side.
                    backlog.extend(self._queue.take_all(timeout=0))
                    self._write_parallel(backlog)
                while backlog:
                    item = backlog.popleft()
                    if isinstance(item, Frame):
                        self._write_frame(item)
                        # A writer that falls behind still commits on time.
                        if time.monotonic() - last_commit >= self.flush_interval:
                            self._commit_all()
                            last_commit = time.monotonic()
                        if self._queue.waiting and self._parallel:
                            break
                    elif isinstance(item, Flush):
                        self._commit_all(parallel=True)
                        last_commit = time.monotonic()
                        self._queue.done_waiting()
                        item.done.set()
                    elif isinstance(item, Meta):
                        self.sink.apply_meta(item)
                    elif isinstance(item, Mark):
                        self.sink.write_kept(self.flight.mark(item.step, item.reason) if self.flight else [])
                    else:  # Stop: exact array lengths for plain zarr readers
                        self.sink.open_resumed()  # (also streams untouched since a crash)
                        if self.flight is not None:
                            self.flight.close()
                        self._commit_all(final=True, parallel=True)
                        item.done.set()
                        return
                if time.monotonic() - last_commit >= self.flush_interval:
                    self._commit_all()
                    last_commit = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - everything must reach the training thread
            self._error = exc
            _log.debug("spikestore writer failed", exc_info=exc)
            self._queue.kill()
        finally:
            self._helpers.shutdown()

    @property
    def _parallel(self) -> bool:
        # A flight recorder decides across streams (a trigger on one keeps every stream's steps): one thread.
        return self._helpers.count > 1 and self.flight is None

    def _write_parallel(self, backlog: deque[Any]) -> None:
        """Write the records ahead of the first flush/close in ``backlog``, one stream per thread.

        Streams share nothing but the backend, so each keeps its own order.
        """
        groups: dict[str, list[Any]] = {}
        while backlog and isinstance(backlog[0], (Frame, Meta)):
            item = backlog.popleft()
            groups.setdefault(item.key, []).append(item)
        for key in groups:  # (may rewrite the root document: one thread at a time)
            if not self.failures.failed(key):
                try:
                    self.sink.stream(key)
                except Exception as exc:  # its first record fails the stream below
                    if stops_writer(exc):
                        raise
        biggest_first = sorted(groups.values(), key=lambda g: -sum(getattr(i, "nbytes", 0) for i in g))
        self._helpers.run([functools.partial(self._write_items, g) for g in biggest_first])

    def _write_items(self, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, Frame):
                self._write_frame(item)
            else:
                self.sink.apply_meta(item)

    def _write_frame(self, frame: Frame) -> None:
        try:
            self.sink.write_frame(frame)
        finally:
            self._queue.release(frame.nbytes)

    def _commit_all(self, *, final: bool = False, parallel: bool = False) -> None:
        """Commit every stream (``parallel``: someone waits, so on several threads), then the root's counts."""
        self.sink.commit(final=final, parallel=parallel)
        self._root.set_counts(dropped=self.drops.count)
        if self.flight is not None:  # after the records its triggers describe
            self._root.set_flight(self.flight.document())
