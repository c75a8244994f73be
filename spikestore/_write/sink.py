"""The writer thread's streams: each record into its stream, a failed record stopping only its own.

:class:`Writer` (:mod:`spikestore._write.writer`) owns the thread and its
queue; a :class:`StreamSink` owns what the thread writes into: one
:class:`~spikestore._write.assembly.StreamWriter` per stream, opened at its
first record (or its first document change, or at the end for a stream
resumed from a store opened for append), and the rule that a record which
cannot be stored stops its own stream and no other
(:mod:`spikestore._write.failures`). With a flight recorder, records go to
its ring first and only the ones it keeps reach the streams.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from spikestore._failures import stops_writer
from spikestore._write import threads
from spikestore._write.assembly import StreamWriter
from spikestore._write.capture import Frame, check_intact, prepare
from spikestore._write.failures import StreamFailures
from spikestore._write.flight_ring import Entry
from spikestore._write.flight_state import FlightState
from spikestore._write.queue import Meta
from spikestore._write.root import RootDocument
from spikestore.backends import Backend
from spikestore.codecs._packing import Packer
from spikestore.errors import InPlaceModificationError

__all__ = ["StreamSink"]

_log = logging.getLogger("spikestore")


class StreamSink:
    """The streams one writer thread (and, while someone waits, its helpers) writes records into.

    Parameters
    ----------
    backend, root
        The store's open backend and root document (new streams are added to it).
    streams
        Committed stream documents of a store opened for append.
    chunk_bytes, level
        Target uncompressed chunk size and compression level of new segments.
    flight
        The flight recorder's state, or ``None`` (every record is written).
    failures
        Where a stream that stops is reported to the training thread.
    helpers
        The threads commits run on when someone waits for them.
    """

    def __init__(self, backend: Backend, root: RootDocument, *, streams: dict[str, dict[str, Any]],
                 chunk_bytes: int, level: int | None, flight: FlightState | None,
                 failures: StreamFailures, helpers: threads.HelperThreads) -> None:
        self.backend = backend
        self._root = root
        self._chunk_bytes = chunk_bytes
        self._level = level
        self._flight = flight
        self._failures = failures
        self._helpers = helpers
        self._resume_docs = dict(streams)
        self._streams: dict[str, StreamWriter] = {}
        self._packers = threading.local()  # one scratch Packer per thread that writes frames

    def stream(self, key: str) -> StreamWriter:
        """The writer of stream ``key``, opened (and added to the root document) on first use."""
        sw = self._streams.get(key)
        if sw is None:
            doc = self._resume_docs.pop(key, None)
            sw = StreamWriter(self.backend, key, chunk_bytes=self._chunk_bytes, level=self._level, doc=doc)
            self._streams[key] = sw
            self._root.add_stream(key)
            meta = None if self._flight is None else self._flight.pending_meta(key)
            if meta is not None:
                self.apply_meta(meta)
        return sw

    def open_resumed(self) -> None:
        """Open every stream resumed from disk, written to or not, so the final commit sets its exact length."""
        for key in list(self._resume_docs):
            self.stream(key)

    def apply_meta(self, item: Meta) -> None:
        """Set a stream's selection and attrs (queued in order with its records)."""
        if self._failures.failed(item.key):
            return  # queued before its stream failed: a failed stream is never written again
        if self._flight is not None and item.key not in self._streams and item.key not in self._resume_docs:
            self._flight.defer_meta(item)  # a stream exists once a record of it is kept
            return
        sw = self.stream(item.key)
        sw.doc |= {"selection": item.selection, "attrs": item.attrs}
        sw.doc_changed = True

    def write_frame(self, frame: Frame) -> None:
        """Store one record; a record that cannot be stored stops its stream (never the others)."""
        if self._failures.failed(frame.key):
            return  # queued before its stream failed; the failure says what is missing
        if self._flight is not None:
            self._write_flight_frame(frame)
            return
        sw: StreamWriter | None = None
        adding = False
        try:
            sw = self.stream(frame.key)
            prepared = prepare(frame, self._packer(), keep_raw=sw.raw_segment_fits(
                frame.shape, frame.dtype, frame.extra.get("precision")))
            check_intact(frame)  # (prepare copied or packed the values it vouches for)
            adding = True  # from here on the stream's chunk buffers change
            sw.add(prepared, frame.step, frame.call, frame.time)
        except Exception as exc:
            if stops_writer(exc):
                raise
            # A change in place found while the record was added left the stream's state whole
            # (the record was taken back out), so its earlier records can still be committed.
            undone = isinstance(exc, InPlaceModificationError) and _add_undone(sw)
            self._fail_stream(frame.key, frame.step, exc, sw, committable=not adding or undone)

    def _packer(self) -> Packer:
        packer: Packer | None = getattr(self._packers, "packer", None)
        if packer is None:
            packer = self._packers.packer = Packer()
        return packer

    def _write_flight_frame(self, frame: Frame) -> None:
        """Prepare and check a record of a flight-recorded store, then write what the recorder keeps now.

        A record that cannot be prepared or checked stops its stream, whose kept records so far are
        committed (nothing of this record reached them).
        """
        assert self._flight is not None
        try:
            prepared = prepare(frame, self._packer(), keep_raw=self._flight.keep_raw(frame))
            check_intact(frame)
            kept = self._flight.record(frame, prepared, frame.extra.pop("device_nonfinite", None))
        except Exception as exc:
            if stops_writer(exc):
                raise
            self._fail_stream(frame.key, frame.step, exc, self._streams.get(frame.key), committable=True)
            return
        self.write_kept(kept)

    def write_kept(self, kept: list[Entry]) -> None:
        """Write records the flight recorder keeps; one that cannot be stored stops its own stream."""
        for e in kept:
            if self._failures.failed(e.key):
                continue
            sw: StreamWriter | None = None
            try:
                sw = self.stream(e.key)
                sw.add(e.take(), e.step, e.call, e.time)
            except Exception as exc:
                if stops_writer(exc):
                    raise
                self._fail_stream(e.key, e.step, exc, sw, committable=False)

    def _fail_stream(self, key: str, step: int, exc: Exception, sw: StreamWriter | None, *,
                     committable: bool) -> None:
        """Stop one stream: commit what it had (when its state is whole), then never touch it again."""
        _log.debug("spikestore stream %s failed", key, exc_info=exc)
        if sw is not None and committable:
            try:
                sw.commit()
            except Exception as commit_exc:  # the stream's own failure is what is reported
                if stops_writer(commit_exc):
                    raise
        self._streams.pop(key, None)
        self._failures.fail(key, step, exc)

    def commit(self, *, final: bool = False, parallel: bool = False) -> None:
        """Commit every stream; with ``parallel`` (someone waits) on the helper threads.

        A durable store commits one stream at a time: its fsyncs would
        otherwise cover another stream's files half-way through a commit.
        """
        streams = list(self._streams.values())
        if parallel and not self.backend.durable:
            self._helpers.run([functools.partial(sw.commit, final=final) for sw in streams])
        else:
            for sw in streams:
                sw.commit(final=final)


def _add_undone(sw: StreamWriter | None) -> bool:
    """Whether a failed ``sw.add`` left the stream whole: its open segment and index hold the same records."""
    if sw is None or sw.segment is None:
        return False
    return sw.segment.start + sw.segment.count == sw.count
