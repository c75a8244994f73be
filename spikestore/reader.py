"""``spikestore.open``: lazy, read-only access to a store.

Opening reads the root document only; a stream's document is read when the
stream is first used, and chunks when records are asked for. A reader
believes only the committed ``count`` of each stream, so it can open a store
that a live writer is still appending to (``Run.refresh()`` shows more).
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, open_backend
from .codecs import ChecksumError, ChunkCodec, codec_from_config
from .errors import (
    DamagedStoreError,
    InvalidArgumentError,
    StoreClosedError,
    StoreNotFoundError,
    StreamNotFoundError,
)
from .format import INDEX_ARRAYS, new_stream_doc, split_key, stream_node, validate_doc
from .packing import unpack_bits
from .precision import restore_precision

__all__ = ["Run", "Segment", "Stream", "open", "read_index_tail"]


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


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

    def decode_rows(self, rows: np.ndarray) -> np.ndarray:
        """Turn stored rows ``[k, *stored_shape]`` into records ``[k, *shape]``."""
        if self.encoding == "bits":
            bf16 = self.doc["dtype"] == "bfloat16"
            out = unpack_bits(rows, self.shape[-1], np.float32 if bf16 else self.dtype)
            return out.astype(self.dtype, copy=False).reshape((len(rows), *self.shape))
        if self.doc["dtype"] == "bfloat16":
            return rows.view(self.dtype).reshape((len(rows), *self.shape))
        rows = restore_precision(rows, self.doc.get("precision"), self.dtype)
        return rows.reshape((len(rows), *self.shape))

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


class Stream:
    """One recorded quantity of one layer: records along axis 0.

    ``s[i]`` is a numpy array with the original dtype and shape; slices and
    integer arrays give stacked records when they share one shape.
    """

    def __init__(self, run: Run, key: str) -> None:
        self._run = run
        self.key = key
        self.quantity, self.layer = split_key(key)
        self.node = stream_node(key)
        self._load()

    def _load(self) -> None:
        doc = self._run._backend.read_doc(self.node)
        if doc is None:  # listed in the root, not yet committed
            doc = new_stream_doc(self.key, 1, {})
        self.doc = validate_doc(doc, "stream", f"{self._run.path}:{self.key}")
        self.segments = [Segment(self, d) for d in self.doc["segments"] if d["count"] > 0]
        self._starts = [s.start for s in self.segments]
        self._index: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.doc["count"])

    @property
    def selection(self) -> dict[str, Any] | None:
        """What part of the layer each record covers (set by monitors)."""
        return self.doc["selection"]

    @property
    def attrs(self) -> dict[str, Any]:
        return self.doc["attrs"]

    def _segment_of(self, i: int) -> Segment:
        return self.segments[bisect.bisect_right(self._starts, i) - 1]

    def _norm(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"record {i} out of range for stream {self.key!r} with {n} records")
        return j

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, (int, np.integer)):
            j = self._norm(item)
            seg = self._segment_of(j)
            return seg.read(j - seg.start, j - seg.start + 1)[0, ...]
        if isinstance(item, slice):
            idx = np.arange(len(self))[item]
        else:
            idx = np.asarray(item)
            if idx.dtype == np.bool_:
                idx = np.flatnonzero(idx)
            if idx.dtype.kind not in "iu":
                raise InvalidArgumentError(f"index records with ints, slices or int/bool arrays, not {item!r}")
            idx = np.array([self._norm(i) for i in idx.reshape(-1)], dtype=np.int64)
        return self._gather(idx)

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        if idx.size == 0:
            seg = self.segments[0] if self.segments else None
            shape = seg.shape if seg else ()
            return np.zeros((0, *shape), seg.dtype if seg else np.float32)
        segs = {id(self._segment_of(int(i))): self._segment_of(int(i)) for i in (idx[0], idx[-1])}
        if np.all(np.diff(idx) == 1):  # a contiguous run: read chunk by chunk
            parts = []
            i, stop = int(idx[0]), int(idx[-1]) + 1
            while i < stop:
                seg = self._segment_of(i)
                j = min(stop, seg.stop)
                parts.append(seg.read(i - seg.start, j - seg.start))
                i = j
        else:
            parts = [self[int(i)][None] for i in idx]
        shapes = {(p.shape[1:], p.dtype) for p in parts}
        if len(shapes) > 1 or len(segs) > 1 and len({(s.shape, s.dtype) for s in segs.values()}) > 1:
            raise InvalidArgumentError(
                f"records of stream {self.key!r} in this selection have different shapes or "
                "dtypes (they span segments); read them one by one or per segment (s.segments)")
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for seg in self.segments:
            for c in range(seg.nchunks):
                lo = c * seg.chunk_records
                hi = min(seg.count, lo + seg.chunk_records)
                rows = seg.decode_rows(seg.chunk(c)[: hi - lo])
                yield from rows

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

    def __repr__(self) -> str:
        return f"<spikestore.Stream {self.key!r}: {len(self)} records, {len(self.segments)} segment(s)>"


class Run:
    """A store opened for reading. Use :func:`open`."""

    def __init__(self, path: Path, backend: Backend) -> None:
        self.path = path
        self._backend = backend
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._streams: dict[str, Stream] = {}
        self._closed = False
        self.refresh()

    def refresh(self) -> None:
        """Re-read the metadata to see records committed since opening."""
        self._check()
        doc = self._backend.read_doc("")
        if doc is None:
            raise StoreNotFoundError(f"{self.path} has no spikestore root document")
        self.doc = validate_doc(doc, "root", str(self.path))
        for s in self._streams.values():
            s._load()
        self._cache.clear()

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError(f"run {self.path} is closed")

    @property
    def streams(self) -> list[str]:
        """Stream keys ``quantity/layer`` in the order they were created."""
        return list(self.doc["streams"])

    @property
    def metadata(self) -> dict[str, Any]:
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
        arr = self._cache.get(key)
        if arr is not None:
            self._cache.move_to_end(key)
            return arr
        arr = _read_chunk(self._backend, seg.node, number, seg.codec,
                          (seg.chunk_records, *seg.stored_shape), seg.stored_dtype,
                          f"stream {seg.stream.key!r}")
        self._cache[key] = arr
        while len(self._cache) > 8:
            self._cache.popitem(last=False)
        return arr

    def summary(self) -> list[dict[str, Any]]:
        """One row per stream (see :func:`spikestore.summary.summarize`)."""
        from .summary import summarize

        return summarize(self)

    def summary_table(self) -> str:
        """The summary as a fixed-width text table."""
        from .summary import format_table

        return format_table(self.summary())

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
    be = open_backend(p, backend=backend, writable=False)
    if not be.exists():
        be.close()
        raise StoreNotFoundError(f"{p} is not a spikestore store (no root metadata)")
    return Run(p, be)
