"""``spikestore.Store``: the write side of a store."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from spikestore._format import new_root_doc, split_key
from spikestore._format.checks import MAX_CHUNK_BYTES
from spikestore._format.names import MAX_NAME_BYTES
from spikestore._write import open_stores
from spikestore._write.capture import capture, check_step
from spikestore._write.clock import StepClock
from spikestore._write.cuda import CudaCapture
from spikestore._write.flight import FlightRecorder
from spikestore._write.flight_checks import check_reason
from spikestore._write.flight_state import warn_shrunk
from spikestore._write.group import open_part
from spikestore._write.opening import open_for_writing
from spikestore._write.pinned import PinnedPool
from spikestore._write.recorder import Recorder
from spikestore._write.streams import StreamTable
from spikestore._write.writer import Writer
from spikestore.backends import StoreURL, backend_name_for, location
from spikestore.codecs import _packing as packing
from spikestore.codecs._chunk import check_level
from spikestore.codecs._precision import check_lossy
from spikestore.errors import InvalidArgumentError, WriterError

__all__ = ["Store", "recorder"]

_log = logging.getLogger("spikestore")

class Store:
    """A spikestore store opened for writing.

    Records are handed to a background writer thread that packs, compresses
    and commits them; memory stays bounded by ``max_pending_bytes`` plus one
    chunk per stream, however long the run.

    Opening a store also loads the write path's compiled kernels, once per
    process (~1 s; ~15 s the first time spikestore runs on a machine), so
    that no record pays for them inside the training loop.

    Parameters
    ----------
    path
        Directory of a Zarr store, or a ``.h5``/``.hdf5`` file (HDF5), or
        the URL of a Zarr store on object storage (``s3://bucket/run.zarr``;
        ``docs/object-storage.md``).
    mode
        ``"w"`` creates a store (refusing a non-empty one unless
        ``overwrite=True``); ``"a"`` appends to an existing store, steps
        continuing after the last recorded one. To read, use
        :func:`spikestore.open`. Either way the store takes the writer lock
        (on the store itself and ``<path>.lock`` beside it; a leased lock
        object ``<url>.lock`` behind a URL; ``docs/format.md`` §2.2) before
        touching anything, and holds it until :meth:`close`: a second
        writer, here or in another process, through any name of the store,
        gets :class:`~spikestore.StoreInUseError`, and ``overwrite=True``
        never deletes a store whose writer is alive.
    overwrite
        With ``mode="w"``, delete whatever is at ``path`` first.
    backend
        ``"zarr"`` or ``"hdf5"``; by default chosen from the path's suffix.
    metadata
        JSON-serialisable run metadata stored in the root document.
    max_pending_bytes
        Bound on record bytes handed over but not yet written (default 256 MiB),
        counted at their size as handed over: float32 spikes count 4 bytes a
        value though they wait bit-packed (1/32 of that), so the bound also
        limits how far the writer may fall behind, which is what a crash can lose.
        It also bounds CUDA records' pinned host buffers and GPU snapshots (docs/cuda.md).
    on_full
        What ``append`` does when a bound is reached: ``"block"``
        (default; nothing is lost) or ``"drop"`` (drop and count).
    flush_interval
        Seconds between automatic commits; a crash loses at most this window.
    chunk_bytes
        Target uncompressed size of one chunk of stored records (default
        256 KiB of packed bits or raw values). Larger chunks compress a
        little better; smaller ones make a cold random read cheaper (a read
        decodes one whole chunk). Records of 64 KiB or more still go at
        least 4 to a chunk (up to 4 MiB): each chunk is a file, and files
        cost time to create.
    durable
        ``fsync`` every commit, so committed records survive a power loss,
        not only a process crash. Slower. Behind a URL every acknowledged
        write is durable already, and this changes nothing.
    compression_level
        Level of the chunk codecs, 1 to 9 (default 1): zstd's for spikes,
        blosc's for other records. From 2, spike chunks
        also try the codec's per-neuron mode (~10% smaller on trained
        layers, 5-10x slower to write and read them; docs/performance.md).
    storage_options
        For a URL only: passed to zarr's ``FsspecStore.from_url`` as zarr
        passes them (``endpoint_url``, ``key``, ``secret``, ``anon``, ...).
    lock
        ``False`` (a URL only) takes no lock object: the caller promises that
        nothing else writes this store while it is open. For object stores
        without S3 conditional writes, which refuse the leased lock
        (``docs/object-storage.md`` §3); refused for a local path, where the
        lock always works.
    ranked
        Inside an initialised ``torch.distributed`` process group of two or
        more ranks, every rank's ``Store(path)`` records its part of one run
        (``docs/reading.md`` §10); a collective, so every rank must call it.
        ``False``: this process records a store of its own (rank 0 alone, say).
    flight_recorder
        A :class:`~spikestore.FlightRecorder`: keep only the steps around its
        triggers and :meth:`trigger` calls (docs/flight-recorder.md).

    Examples
    --------
    >>> with spikestore.Store("run.zarr", mode="w") as store:   # doctest: +SKIP
    ...     for step in range(3):
    ...         store.set_step(step)
    ...         store.append("output/fc1", spikes)
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "w", *, overwrite: bool = False,
                 backend: str | None = None, metadata: dict[str, Any] | None = None,
                 max_pending_bytes: int = 256 << 20, on_full: str = "block",
                 flush_interval: float = 5.0, chunk_bytes: int = 256 << 10,
                 durable: bool = False, compression_level: int | None = None,
                 storage_options: dict[str, Any] | None = None, lock: bool = True, ranked: bool = True,
                 flight_recorder: FlightRecorder | None = None) -> None:
        self._path: Path | StoreURL = location(path, storage_options)
        backend_name = backend_name_for(self._path, backend)  # (a bad one is refused before anything changes)
        self._mode = mode
        self._writer: Writer | None = None
        self._closed = False
        self._pid = os.getpid()
        if mode not in ("w", "a"):
            hint = "; to read a store, use spikestore.open(path)" if mode == "r" else ""
            raise InvalidArgumentError(f"mode must be 'w' or 'a', not {mode!r}{hint}")
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidArgumentError(
                f"chunk_bytes must be between 1 and {MAX_CHUNK_BYTES} (2 GiB, the most one stored chunk "
                f"may decode to), not {chunk_bytes}")
        if compression_level is not None:
            compression_level = check_level(compression_level)
        if flight_recorder is not None and not isinstance(flight_recorder, FlightRecorder):
            raise InvalidArgumentError(f"flight_recorder must be a spikestore.FlightRecorder, not {flight_recorder!r}")
        packing.load_kernels()  # here, not in the first record's hook inside the training loop
        doc = new_root_doc(metadata) if mode == "w" else None  # (checks the metadata before anything changes)
        # In a process group, this rank's part of one run (spikestore._write.group); else path itself.
        self._path, opened = open_part(self._path, backend_name, ranked, lambda part, **group: open_for_writing(
            part, mode, overwrite=overwrite, backend=backend, root_doc=doc, metadata=metadata,
            lock=lock, durable=durable, **group,
            writer_options={"max_pending_bytes": max_pending_bytes, "on_full": on_full,
                            "flush_interval": flush_interval, "chunk_bytes": chunk_bytes,
                            "level": compression_level, "flight": flight_recorder}))
        # The store owns the lock, the backend and the root document for its whole life.
        self._lock, self._backend, self._root = opened.lock, opened.backend, opened.root
        self._writer = opened.writer
        # The step (advanced by monitors until set_step is called) and each stream's
        # index and call: the training thread's whole state of the recording.
        self._clock = StepClock(opened.step)
        self._streams = StreamTable(str(self.path), {k: d["count"] for k, d in opened.streams.items()})
        self._recorder = Recorder(self._clock, self._streams)
        # CUDA records: a pinned pool with the queue's budget and policy (docs/cuda.md); a
        # producer waiting for a buffer stops waiting when the writer failed.
        writer = opened.writer
        self._device = CudaCapture(max_pending_bytes, block=on_full == "block",
                                   stopped=lambda: writer.error is not None,
                                   check_finite=flight_recorder is not None and flight_recorder.checks_nonfinite)
        open_stores.track(self)

    @property
    def path(self) -> Path | StoreURL:
        """Where this process records: the store, or in a process group this rank's part of the run."""
        return self._path

    @property
    def mode(self) -> str:
        """``"w"`` (created) or ``"a"`` (opened for append)."""
        return self._mode

    # -- recording ------------------------------------------------------------
    @property
    def step(self) -> int:
        """The step that new records are keyed by."""
        return self._clock.step

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full (``on_full="drop"``) since this store was opened; readable
        after :meth:`close` too (the store's root document sums them over sessions: ``writer.dropped``)."""
        return 0 if self._writer is None else self._writer.drops.count

    def _live(self, *, report_streams: bool = True) -> Writer:
        if self._writer is None:
            raise InvalidArgumentError("store failed to open")
        self._writer.check(report_streams=report_streams)
        return self._writer

    def set_step(self, step: int) -> None:
        """Key the records made from now on by ``step``.

        Until this is first called, monitors advance the step by one at each
        forward pass of their network (:mod:`spikestore.monitor`); from then
        on the step changes only here.

        Parameters
        ----------
        step
            An integer (``int``, numpy integer, or anything with
            ``__index__``) in ``0 <= step <= 2**63 - 1``, the range of the
            int64 step index. Floats are refused, never rounded; so is ``bool``.

        Raises
        ------
        InvalidArgumentError
            For any other step; the current step is left as it was.
        """
        self._live()
        self._clock.set(step)

    def append(self, stream: str, value: Any, *, step: int | None = None, copy: bool = True,
               encoding: str = "auto", precision: str | None = None) -> int | None:
        """Hand one record of ``stream`` (``"quantity/layer"``) to the writer.

        Parameters
        ----------
        stream
            Stream key, e.g. ``"output/1"``.
        value
            A tensor (any device), numpy array, or Python/numpy number.
        step
            Step to key the record by; the store's current step by default.
            Same rules as :meth:`set_step`.
        copy
            ``True`` (default): store a snapshot, whatever happens to ``value``
            afterwards. A float32 CPU tensor of 0s and 1s is bit-packed at once
            (1/32 of its bytes), any other CPU tensor is copied; a CUDA tensor
            is always cloned on the device, then copied to the host without
            synchronising; numpy arrays and numbers are always copied.
            ``False`` hands a CPU tensor that is not packed at once to the
            writer thread as it is, saving that copy. You then promise that
            nothing writes into its storage (through it, a view or alias,
            ``.numpy()``, ``.data``, ``out=``, or by reusing its memory) until
            the writer has read it: it may do so any time until a
            :meth:`flush` (or :meth:`close`) called after this ``append``
            returns, which is the only signal. A broken promise is caught
            when an in-place op has ended by the time the writer reads the
            tensor (its version counter moved): the stream then fails at
            that record, as for any record that cannot be stored
            (:class:`~spikestore.errors.StreamFailedError` at the next call,
            naming the stream and the step; its records before that one
            stay stored, the other streams go on). Writes through
            ``.numpy()``, ``.data`` or numpy views, and an op still running
            while the writer reads, are not seen: the store holds whatever
            the writer read.
        encoding
            ``"auto"`` (bits when every value is 0 or 1, raw otherwise),
            ``"bits"`` or ``"raw"``.
        precision
            Lossy storage for float records that are not binary: ``"bf16"`` or
            ``"keepbits:N"`` (see :mod:`spikestore.codecs._precision`). Exact by default.

        Returns
        -------
        int or None
            The record's index within its stream, or ``None`` if it was
            dropped (only with ``on_full="drop"``). The index is exact: the
            record is stored at it, or its stream fails and reports the step
            from which its records are missing; a stream that goes on
            recording never leaves a record out.

        Raises
        ------
        InvalidArgumentError
            For a bad stream key (or a quantity longer than 255 bytes), step
            or encoding.
        InvalidValueError
            For a value that cannot be stored exactly and read back (see
            :func:`spikestore._write.capture.capture`). Every check runs here,
            on the calling thread, before the record is queued: a refused
            record leaves the store and its other streams untouched.
        """
        # Another stream's failure is reported by set_step, flush or close, never by
        # refusing this record (which would be lost to a caller that carries on).
        writer = self._live(report_streams=False)
        streams = self._streams
        if not streams.recorded(stream):
            quantity, _ = split_key(stream)  # validated once per stream and session
            if len(quantity) > MAX_NAME_BYTES and not streams.resumed(stream):
                raise InvalidArgumentError(
                    f"stream {stream!r}: the quantity name is {len(quantity)} bytes long; group names "
                    f"are limited to {MAX_NAME_BYTES} bytes, use a shorter quantity name")
        if encoding not in ("auto", "bits", "raw"):
            raise InvalidArgumentError(f"encoding must be 'auto', 'bits' or 'raw', not {encoding!r}")
        s = self._clock.step if step is None else check_step(step, stream)
        call = streams.call(stream, s)
        frame = capture(stream, value, s, call, copy=copy, encoding=encoding, device=self._device)
        if precision is not None:
            frame.extra["precision"] = check_lossy(stream, frame.dtype, precision)
        return streams.handed_over(stream, s, call, queued=writer.submit(frame))

    def trigger(self, reason: str) -> None:
        """Fire the flight recorder at the current step (``stream`` ``None`` in :attr:`Run.triggers`).

        Keeps every stream's records of steps ``step - before`` through
        ``step + after``; returns at once (the writer thread does the rest).

        Raises
        ------
        InvalidArgumentError
            If the store has no flight recorder, or ``reason`` is not a
            non-empty string of at most 1000 characters.
        """
        writer = self._live(report_streams=False)
        if writer.flight is None:
            raise InvalidArgumentError(
                f"store {self.path} has no flight recorder: open it with "
                "Store(..., flight_recorder=spikestore.FlightRecorder(...)) to use trigger()")
        writer.mark(self._clock.step, check_reason(reason, f"store {self.path}: trigger()"))

    def set_stream_info(self, stream: str, *, selection: dict[str, Any] | None = None,
                        attrs: dict[str, Any] | None = None) -> None:
        """Describe ``stream`` in its document: what its records cover, and free-form attrs.

        Readers show them as ``Stream.selection`` and ``Stream.attrs``; a
        ``selection`` with ``step_mode`` and ``batch_axis`` names the
        record axes (``docs/format.md`` §3). Monitors describe their streams
        themselves; call this for streams you append to by hand. Applied in
        order with the records: both fields are replaced (``None``: cleared).
        """
        self._live().update_stream(stream, selection, dict(attrs or {}))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every record handed over so far is committed to disk.

        Each flush writes the partly filled chunk of every stream, which is
        written again once full. Records of 64 KiB or more go 4 to a chunk,
        so flushing after every such record encodes ~2.5x as much as needed;
        ``flush_interval`` already bounds what a crash can lose.

        Raises
        ------
        StreamFailedError
            After the flush, if a stream stopped because one of its records
            could not be stored (the other streams are committed).
        """
        self._live(report_streams=False).flush(timeout)

    def close(self) -> None:
        """Flush and close. Idempotent; also run at interpreter exit.

        Raises
        ------
        WriterError
            If the writer thread failed. The store is closed all the same,
            its root document records the failure, and every record
            committed before it stays readable. Also when the writer closed
            cleanly but its final status could not be written or synced
            (every record is then committed).
        """
        writer = self._writer
        if writer is None or self._closed or os.getpid() != self._pid:
            return  # (a forked child never closes its parent's store)
        open_stores.untrack(self)
        unfinished = None
        try:
            writer.close()
        finally:
            if not writer.closed:  # interrupted while the writer still drains: it stays this store's
                open_stores.track(self)
            else:
                self._closed = True
                try:
                    unfinished = self._finish(writer.error, writer.failures.summary())
                finally:
                    self._lock.release()
                if writer.flight is not None:
                    warn_shrunk(writer.flight, str(self.path))
        if unfinished is not None:  # (reached only when the writer itself closed cleanly)
            raise WriterError(
                f"closing {self.path}: every record is committed, but the final writer status could not "
                f"be written or synced ({type(unfinished).__name__}: {unfinished}); readers see the store "
                "as left by a writer that stopped without closing, and `spikestore verify` checks it"
            ) from unfinished

    def _finish(self, error: BaseException | None, failed_streams: dict[str, str]) -> Exception | None:
        """Record the final writer status, make it durable, release the backend.

        Returns what failed meanwhile, for :meth:`close` to raise when the
        writer closed cleanly (after a writer failure, that failure is what
        the caller gets).
        """
        try:
            self._root.finish(error, failed_streams)
            self._backend.sync()
        except Exception as exc:  # noqa: BLE001 - any failure here is handed to close(), which raises it
            _log.debug("could not record the final writer status of %s", self.path, exc_info=True)
            return exc
        finally:
            self._backend.close()
        return None

    @property
    def pinned_pool(self) -> PinnedPool:
        """The pool of pinned host buffers that CUDA records are copied into (its counters, for
        benchmarks and checks: ``docs/cuda.md``); empty until a CUDA tensor is recorded."""
        return self._device.pool

    @property
    def closed(self) -> bool:
        """Whether the store is closed (or failed to open)."""
        return self._writer is None or self._closed

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"open, step {self._clock.step}"
        return f"<spikestore.Store {str(self.path)!r} ({state})>"


def recorder(store: Store) -> Recorder:
    """The :class:`~spikestore._write.recorder.Recorder` of ``store``: what monitors use of it
    beyond its public API (claiming streams, advancing the step). Internal to spikestore."""
    return store._recorder
