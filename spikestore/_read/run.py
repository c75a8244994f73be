"""``spikestore.open``: lazy, read-only access to a store.

Opening reads the root document only; a stream's document is read when the
stream is first used, and chunks when records are asked for. A reader
believes only the committed ``count`` of each stream, so it can open a store
that a live writer is still appending to (``Run.refresh()`` shows more).

Everything goes through the :class:`~spikestore.backends.Backend` protocol, so
Zarr and HDF5 stores read the same; the dask/xarray views
(:mod:`spikestore.xarray_backend`) and :mod:`spikestore.analysis` read one
stored chunk at a time through :meth:`Segment.chunk`.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from spikestore.backends import Backend, backend_name_for, open_backend
from spikestore.codecs._chunk import ChecksumError, ChunkCodec, codec_from_config
from spikestore.errors import (
    DamagedStoreError,
    InvalidArgumentError,
    StoreClosedError,
    StoreNotFoundError,
    StreamNotFoundError,
)
from spikestore._format import INDEX_ARRAYS, new_stream_doc, split_key, stream_node, validate_doc
from spikestore.codecs._packing import unpack_bits
from spikestore.codecs._precision import restore_precision

__all__ = ["Chunk", "Run", "Segment", "Stream", "open", "read_index_tail", "record_dims"]

#: Decoded chunks a run keeps (per run, least recently used first out).
_CACHE_CHUNKS = 8


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def record_dims(shape: tuple[int, ...], selection: dict[str, Any] | None) -> tuple[str, ...]:
    """Names of the axes of one record, from the monitor's ``selection`` document.

    SpikingJelly layers in multi-step mode (``step_mode="m"``) produce
    ``[T, N, ...]`` and in single-step mode ``[N, ...]``; the monitor records
    which one it saw. Axes after the batch are neurons (``neuron``, or
    ``neuron_0, neuron_1, ...`` for several). Records that do not fit that
    layout (a ``function_on_output`` reduced them, or they were appended by
    hand) get xarray's neutral ``dim_0, dim_1, ...``; set :attr:`Stream.dims`
    to name them.
    """
    nd = len(shape)
    sel = selection or {}
    lead = {("m", 1): ("time", "batch"), ("s", 0): ("batch",)}.get(
        (sel.get("step_mode"), sel.get("batch_axis")))
    if lead is None or nd < len(lead):
        return tuple(f"dim_{k}" for k in range(nd))
    rest = nd - len(lead)
    return lead + (("neuron",) if rest == 1 else tuple(f"neuron_{k}" for k in range(rest)))


def _read_chunk(backend: Backend, node: str, chunk: int, codec: ChunkCodec,
                shape: tuple[int, ...], dtype: np.dtype, where: str) -> np.ndarray:
    raw = backend.read_chunk(node, chunk)
    if raw is None:
        raise DamagedStoreError(
            f"{backend.path}: {where}: chunk {chunk} of {node} is missing inside the committed "
            "range; the store is damaged (a file was deleted or never reached the disk)")
    try:
        return codec.decode(raw, shape, dtype)
    except ChecksumError as exc:
        raise DamagedStoreError(
            f"{backend.path}: {where}: chunk {chunk} of {node} is corrupt ({exc}); "
            "the file was altered after it was written") from None


def read_index_tail(backend: Backend, node: str, doc: dict[str, Any]) -> int:
    """The step of a stream's last committed record (-1 when empty)."""
    n = doc["count"]
    if n == 0:
        return -1
    rpc = doc["index"]["chunk_records"]
    chunk = (n - 1) // rpc
    arr = _read_chunk(backend, f"{node}/step", chunk,
                      codec_from_config(doc["index"]["codecs"]["step"]),
                      (rpc,), np.dtype("int64"), "index")
    return int(arr[(n - 1) % rpc])


class Segment:
    """Records ``start .. start + count`` of a stream: one shape, one dtype."""

    def __init__(self, stream: Stream, doc: dict[str, Any]) -> None:
        self.stream = stream
        self.doc = doc
        self.node = f"{stream.node}/{doc['array']}"
        self.start: int = doc["start"]
        self.count: int = doc["count"]
        self.shape: tuple[int, ...] = tuple(doc["shape"])
        self.dtype = _numpy_dtype(doc["dtype"])
        self.encoding: str = doc["encoding"]
        self.stored_shape: tuple[int, ...] = tuple(doc["stored_shape"])
        self.stored_dtype = np.dtype(doc["stored_dtype"])
        self.chunk_records: int = doc["chunk_records"]
        self.codec = codec_from_config(doc["codec"])

    @property
    def stop(self) -> int:
        return self.start + self.count

    @property
    def nchunks(self) -> int:
        return -(-self.count // self.chunk_records)

    def chunk(self, number: int) -> np.ndarray:
        """Decoded stored rows of chunk ``number`` (packed, for bits)."""
        if int(np.prod(self.stored_shape, dtype=np.int64)) == 0:
            return np.zeros((self.chunk_records, *self.stored_shape), self.stored_dtype)
        return self.stream._run._chunk(self, number)

    @property
    def dims(self) -> tuple[str, ...]:
        """Names of the record axes (see :func:`record_dims`, :attr:`Stream.dims`)."""
        override = self.stream._dims
        if override is not None and len(override) == len(self.shape):
            return override
        return record_dims(self.shape, self.stream.selection)

    def decode_rows(self, rows: np.ndarray) -> np.ndarray:
        """Turn stored rows ``[k, *stored_shape]`` into records ``[k, *shape]``.

        The result never shares memory with the run's chunk cache, so callers
        may modify it.
        """
        if self.encoding == "bits":
            bf16 = self.doc["dtype"] == "bfloat16"
            out = unpack_bits(rows, self.shape[-1], np.float32 if bf16 else self.dtype)
            out = out.astype(self.dtype, copy=False).reshape((len(rows), *self.shape))
        elif self.doc["dtype"] == "bfloat16":
            out = rows.view(self.dtype).reshape((len(rows), *self.shape))
        else:
            rows = restore_precision(rows, self.doc.get("precision"), self.dtype)
            out = rows.reshape((len(rows), *self.shape))
        return out if out.flags.writeable else out.copy()

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Records at segment-local positions ``rows`` (any order), reading each chunk once."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.stored_shape), self.stored_dtype)
        chunks = rows // self.chunk_records
        order = np.argsort(chunks, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(chunks[order])) + 1):
            if len(group):
                c = int(chunks[group[0]])
                out[group] = self.chunk(c)[rows[group] - c * self.chunk_records]
        return self.decode_rows(out)

    def __reduce__(self) -> tuple[Any, ...]:
        # dask's process and distributed schedulers pickle tasks: reopen by path.
        return (Segment, (self.stream, self.doc))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Records ``start:stop`` (segment-local) as one array."""
        parts = []
        rpc = self.chunk_records
        i = start
        while i < stop:
            c, off = divmod(i, rpc)
            take = min(stop - i, rpc - off)
            parts.append(self.chunk(c)[off:off + take])
            i += take
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else \
            np.zeros((0, *self.stored_shape), self.stored_dtype)
        return self.decode_rows(rows)

    def __repr__(self) -> str:
        return (f"<Segment {self.doc['array']} records {self.start}:{self.stop} "
                f"shape {self.shape} {self.doc['dtype']} {self.encoding}>")


class Chunk(NamedTuple):
    """Records ``start:stop`` of a stream, decoded (see :meth:`Stream.iter_chunks`)."""

    start: int
    stop: int
    values: np.ndarray
    steps: np.ndarray
    segment: Segment


def _reopen_stream(run: Run, key: str) -> Stream:
    return run[key]


class Stream:
    """One recorded quantity of one layer: records along axis 0.

    ``s[i]`` is a numpy array with the original dtype and shape; slices and
    integer arrays give stacked records when they share one shape, and
    ``s[i, ...]`` indexes inside the selected records.
    """

    def __init__(self, run: Run, key: str) -> None:
        self._run = run
        self.key = key
        self.quantity, self.layer = split_key(key)
        self.node = stream_node(key)
        self._dims: tuple[str, ...] | None = None
        self._load()

    def _load(self) -> None:
        doc = self._run._backend.read_doc(self.node)
        if doc is None:  # listed in the root, not yet committed
            doc = new_stream_doc(self.key, 1, {})
        self.doc = validate_doc(doc, "stream", f"{self._run.path}:{self.key}")
        self.segments = [Segment(self, d) for d in self.doc["segments"] if d["count"] > 0]
        self._starts = [s.start for s in self.segments]
        self._index: dict[str, np.ndarray] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_stream, (self._run, self.key))

    def __len__(self) -> int:
        return int(self.doc["count"])

    @property
    def selection(self) -> dict[str, Any] | None:
        """What part of the layer each record covers (set by monitors)."""
        return self.doc["selection"]

    @property
    def attrs(self) -> dict[str, Any]:
        return self.doc["attrs"]

    @property
    def dims(self) -> tuple[str, ...]:
        """Names of the axes of one record: ``("time", "batch", "neuron")`` and the like.

        Taken from the monitor's step mode (:func:`record_dims`). Assign a
        tuple to name the axes of records whose layout spikestore cannot know
        (appended by hand, or reduced by a ``function_on_*``); xarray views
        and :mod:`spikestore.analysis` use these names.
        """
        if self._dims is not None:
            return self._dims
        return self.segments[0].dims if self.segments else ()

    @dims.setter
    def dims(self, names: tuple[str, ...] | list[str] | None) -> None:
        if names is not None:
            names = tuple(str(n) for n in names)
            bad = [seg for seg in self.segments if len(seg.shape) != len(names)]
            if bad or len(set(names)) != len(names):
                raise InvalidArgumentError(
                    f"stream {self.key!r}: dims {names} must be distinct and name every axis of "
                    f"every record (record shapes: {sorted({s.shape for s in self.segments})})")
        self._dims = names

    def _segment_of(self, i: int) -> Segment:
        return self.segments[bisect.bisect_right(self._starts, i) - 1]

    def _norm(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"record {i} out of range for stream {self.key!r} with {n} records")
        return j

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, tuple):  # records first, then inside them
            if not item:
                return self[:]
            head, rest = item[0], item[1:]
            recs = self[head]
            return recs[rest] if isinstance(head, (int, np.integer)) else recs[(slice(None), *rest)]
        if isinstance(item, (int, np.integer)):
            j = self._norm(item)
            seg = self._segment_of(j)
            return seg.read(j - seg.start, j - seg.start + 1)[0, ...]
        if isinstance(item, slice):
            idx = np.arange(len(self))[item]
        else:
            idx = np.asarray(item)
            if idx.dtype == np.bool_:
                if idx.shape != (len(self),):
                    raise InvalidArgumentError(
                        f"a boolean mask over stream {self.key!r} needs {len(self)} entries, not {idx.shape}")
                idx = np.flatnonzero(idx)
            if idx.dtype.kind not in "iu":
                raise InvalidArgumentError(f"index records with ints, slices or int/bool arrays, not {item!r}")
            n = len(self)
            idx = idx.reshape(-1).astype(np.int64)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                bad = idx[(idx < -n) | (idx >= n)][0]
                raise IndexError(f"record {bad} out of range for stream {self.key!r} with {n} records")
            idx = np.where(idx < 0, idx + n, idx)
        return self._gather(idx)

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        if idx.size == 0:
            seg = self.segments[0] if self.segments else None
            shape = seg.shape if seg else ()
            return np.zeros((0, *shape), seg.dtype if seg else np.float32)
        which = np.searchsorted(self._starts, idx, side="right") - 1
        used = [self.segments[k] for k in np.unique(which)]
        if len({(s.shape, s.dtype) for s in used}) > 1:
            raise InvalidArgumentError(
                f"records of stream {self.key!r} in this selection have different shapes or "
                "dtypes (they span segments); read them one by one or per segment (s.segments)")
        if np.all(np.diff(idx) == 1):  # a contiguous run: read chunk by chunk
            parts = []
            i, stop = int(idx[0]), int(idx[-1]) + 1
            while i < stop:
                seg = self._segment_of(i)
                j = min(stop, seg.stop)
                parts.append(seg.read(i - seg.start, j - seg.start))
                i = j
            return np.concatenate(parts) if len(parts) > 1 else parts[0]
        out = np.empty((len(idx), *used[0].shape), used[0].dtype)
        for k in np.unique(which):
            seg, mask = self.segments[k], which == k
            out[mask] = seg.take(idx[mask] - seg.start)
        return out

    def sel(self, step: Any, call: int | None = None) -> np.ndarray:
        """Records by step number rather than by position.

        Parameters
        ----------
        step
            An int gives the one record of that step (like ``s[i]``); a step
            with several records (single-step mode records one per time step)
            needs ``call`` to say which. A list/array of steps, or a slice of
            steps with **both ends included** (as in xarray's ``sel``), gives
            every matching record stacked, in record order.
        call
            Keep only records with this ``call`` (order within the step).
        """
        steps = self.steps
        if isinstance(step, slice):
            if step.step not in (None, 1):
                raise InvalidArgumentError("sel(step=slice(a, b)) takes no stride; index the result instead")
            mask = np.ones(len(steps), bool)
            if step.start is not None:
                mask &= steps >= step.start
            if step.stop is not None:
                mask &= steps <= step.stop
        elif np.ndim(step) == 0:
            match = np.flatnonzero(steps == int(step))
            if call is not None:
                match = match[self.calls[match] == call]
            if len(match) != 1:
                what = f"step {int(step)}" + ("" if call is None else f", call {call}")
                if len(match) == 0:
                    span = f"{int(steps.min())}..{int(steps.max())}" if len(steps) else "none"
                    raise InvalidArgumentError(
                        f"stream {self.key!r} has no record at {what} (its steps: {span}); "
                        "check s.steps for the steps it holds")
                raise InvalidArgumentError(
                    f"stream {self.key!r} has {len(match)} records at {what} (calls "
                    f"{self.calls[match].tolist()}); pick one with call=..., or pass step=[{int(step)}] "
                    "to get them all stacked")
            return self[int(match[0])]
        else:
            mask = np.isin(steps, np.asarray(step))
        if call is not None:
            mask &= self.calls == call
        return self._gather(np.flatnonzero(mask))

    def iter_chunks(self, start: int = 0, stop: int | None = None, *,
                    max_records: int | None = None) -> Iterator[Chunk]:
        """Decoded records ``start:stop`` one stored chunk at a time (bounded memory).

        Each :class:`Chunk` holds consecutive records of one segment (one
        shape) and never crosses a stored chunk, so a full pass keeps at most
        one decoded chunk alive; ``max_records`` splits chunks further when
        decoded records are large (bits decode to 32x their stored size as
        float32).
        """
        if max_records is not None and max_records < 1:
            raise InvalidArgumentError(f"max_records must be >= 1, not {max_records!r}")
        start, stop, _ = slice(start, stop).indices(len(self))
        steps = self.steps
        for seg in self.segments:
            i, hi = max(start, seg.start), min(stop, seg.stop)
            while i < hi:
                c, off = divmod(i - seg.start, seg.chunk_records)
                j = min(hi, seg.start + (c + 1) * seg.chunk_records)
                if max_records is not None:
                    j = min(j, i + max_records)
                rows = seg.chunk(c)[off:off + j - i]
                yield Chunk(i, j, seg.decode_rows(rows), steps[i:j], seg)
                i = j

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self.iter_chunks():
            yield from chunk.values

    def _index_array(self, name: str) -> np.ndarray:
        arr = self._index.get(name)
        if arr is None:
            n = len(self)
            rpc = self.doc["index"]["chunk_records"]
            dt = np.dtype(INDEX_ARRAYS[name])
            codec = codec_from_config(self.doc["index"]["codecs"][name])
            parts = [_read_chunk(self._run._backend, f"{self.node}/{name}", c, codec, (rpc,), dt,
                                 f"stream {self.key!r} index")
                     for c in range(-(-n // rpc))]
            arr = (np.concatenate(parts) if parts else np.zeros(0, dt))[:n]
            arr.setflags(write=False)
            self._index[name] = arr
        return arr

    @property
    def steps(self) -> np.ndarray:
        """Step of each record (``int64``)."""
        return self._index_array("step")

    @property
    def calls(self) -> np.ndarray:
        """Order of each record within its step (``int32``; single-step mode gives 0..T-1)."""
        return self._index_array("call")

    @property
    def times(self) -> np.ndarray:
        """Wall-clock time (Unix seconds) at which each record was captured."""
        return self._index_array("time")

    def tensor(self, i: int) -> Any:
        """Record ``i`` as a torch tensor (dtype restored, bfloat16 included)."""
        import torch

        arr = self[i]
        arr = arr if arr.flags.c_contiguous and arr.flags.writeable else arr.copy()
        if self._segment_of(self._norm(i)).doc["dtype"] == "bfloat16":
            return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(arr)

    def to_dask(self) -> Any:
        """Lazy dask arrays ``[records, *shape]``, one dask chunk per stored chunk.

        One array when the stream has one segment, else a list, one per
        segment (``da.concatenate`` joins those of one shape and dtype). They
        cover the records committed when this is called.
        """
        from spikestore._read.xarray_engine import segment_to_dask

        arrays = [segment_to_dask(seg) for seg in self.segments]
        return arrays[0] if len(arrays) == 1 else arrays

    def to_xarray(self, segment: int | None = None) -> Any:
        """A lazy (dask-backed) ``xarray.DataArray``: dims ``record`` + :attr:`dims`.

        ``step`` and ``call`` are coordinates along ``record``
        (``da.swap_dims(record="step")`` selects by step). ``segment`` picks
        one segment; without it, all segments must share shape and dtype.
        """
        from spikestore._read.xarray_engine import stream_to_xarray

        return stream_to_xarray(self, segment)

    def __repr__(self) -> str:
        return f"<spikestore.Stream {self.key!r}: {len(self)} records, {len(self.segments)} segment(s)>"


class Run:
    """A store opened for reading. Use :func:`open`."""

    def __init__(self, path: Path, backend: Backend, backend_name: str | None = None) -> None:
        self.path = path
        self._backend = backend
        self._backend_name = backend_name
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # dask and xarray read chunks from several threads
        self._streams: dict[str, Stream] = {}
        self._closed = False
        self.refresh()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled into another process (dask's process/distributed schedulers): reopen by path.
        return (_reopen, (self.path, self._backend_name))

    def refresh(self) -> None:
        """Re-read the metadata to see records committed since opening.

        Streams already handed out (``run[key]``) update in place; arrays
        already returned, and dask/xarray views, keep what they covered.
        """
        self._check()
        reopen = getattr(self._backend, "refresh", None)  # e.g. HDF5 SWMR
        if reopen is not None:
            reopen()
        doc = self._backend.read_doc("")
        if doc is None:
            raise StoreNotFoundError(f"{self.path} has no spikestore root document")
        self.doc = validate_doc(doc, "root", str(self.path))
        for s in self._streams.values():
            s._load()
        with self._lock:
            self._cache.clear()

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError(f"run {self.path} is closed")

    @property
    def streams(self) -> list[str]:
        """Stream keys ``quantity/layer`` in the order they were created."""
        return list(self.doc["streams"])

    @property
    def quantities(self) -> list[str]:
        """Distinct quantities (``output``, ``v_seq``...) in stream order."""
        return list(dict.fromkeys(split_key(k)[0] for k in self.doc["streams"]))

    @property
    def layers(self) -> list[str]:
        """Distinct layer names in stream order."""
        return list(dict.fromkeys(split_key(k)[1] for k in self.doc["streams"]))

    @property
    def metadata(self) -> dict[str, Any]:
        """The run metadata given to ``Store(metadata=...)``."""
        return self.doc["metadata"]

    @property
    def writer(self) -> dict[str, Any]:
        """The writer's status document (``status`` is open, closed or failed)."""
        return self.doc["writer"]

    def __getitem__(self, key: str) -> Stream:
        self._check()
        s = self._streams.get(key)
        if s is None:
            if key not in self.doc["streams"]:
                raise StreamNotFoundError(
                    f"{self.path} has no stream {key!r}; streams are: {', '.join(self.streams) or 'none'}")
            s = self._streams[key] = Stream(self, key)
        return s

    def __contains__(self, key: object) -> bool:
        return key in self.doc["streams"]

    def __iter__(self) -> Iterator[str]:
        return iter(self.streams)

    def __len__(self) -> int:
        return len(self.doc["streams"])

    def _chunk(self, seg: Segment, number: int) -> np.ndarray:
        self._check()
        key = (seg.node, number)
        with self._lock:
            arr = self._cache.get(key)
            if arr is not None:
                self._cache.move_to_end(key)
                return arr
        arr = _read_chunk(self._backend, seg.node, number, seg.codec,
                          (seg.chunk_records, *seg.stored_shape), seg.stored_dtype,
                          f"stream {seg.stream.key!r}")
        arr.setflags(write=False)  # shared: Segment.decode_rows copies what it hands out
        with self._lock:
            self._cache[key] = arr
            while len(self._cache) > _CACHE_CHUNKS:
                self._cache.popitem(last=False)
        return arr

    def summary(self) -> list[dict[str, Any]]:
        """One row per stream (see :func:`spikestore.summary.summarize`)."""
        from spikestore._read.summary import summarize

        return summarize(self)

    def summary_table(self) -> str:
        """The summary as a fixed-width text table."""
        from spikestore._read.summary import format_table

        return format_table(self.summary())

    def _repr_html_(self) -> str:
        """The summary as an HTML table (Jupyter shows this for a bare ``run``)."""
        from html import escape

        from spikestore._read.summary import HEAD, row_cells, total_cells

        rows, cells = self.summary(), []
        for r in rows:
            row = row_cells(r, times="&times;", more=" more")
            for i in (0, 4, 5):  # the names; the shape cell holds the &times; entity
                row[i] = escape(row[i])
            cells.append(row)
        cells.append(total_cells(rows, label="<b>total</b>"))
        head = HEAD
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)
        w = self.writer
        return (f"<div><b>spikestore run</b> <code>{escape(str(self.path))}</code>: {len(self)} streams, "
                f"created {escape(self.doc['created'])}, writer {escape(w['status'])}"
                f"{', ' + str(w['dropped']) + ' records dropped' if w.get('dropped') else ''}"
                f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
                f"<tbody>{body}</tbody></table></div>")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cache.clear()
            self._backend.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<spikestore.Run {str(self.path)!r}: {len(self)} streams, writer {self.writer['status']}>"


def open(path: str | os.PathLike[str], *, backend: str | None = None) -> Run:  # noqa: A001
    """Open a store read-only and lazily.

    Works while a writer is still appending: only committed records are
    visible; call :meth:`Run.refresh` to see newer ones.

    Raises
    ------
    StoreNotFoundError
        If nothing, or something that is not a spikestore store, is at ``path``.
    """
    p = Path(path)
    if not p.exists():
        raise StoreNotFoundError(f"no store at {p}")
    name = backend_name_for(p, backend)
    be = open_backend(p, backend=name, writable=False)
    if not be.exists():
        be.close()
        raise StoreNotFoundError(f"{p} is not a spikestore store (no root metadata)")
    return Run(p, be, name)


def _reopen(path: Path, backend: str | None) -> Run:
    return open(path, backend=backend)
