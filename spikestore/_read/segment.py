"""One segment (records of one shape and dtype) and the one way to walk stored chunks.

A stream stores its records in segments; a segment stores them in chunks of
``chunk_records`` rows, bit-packed or raw. This module turns stored rows back
into records (:meth:`Segment.decode_rows`) and holds the chunk arithmetic
every pass over a stream shares: :func:`iter_blocks` cuts records
``start:stop`` into :class:`Block` objects that never cross a stored chunk
and never exceed a bound on records or values, and reads a block's chunk only
when asked. ``Stream.iter_chunks``, the dask graphs, :mod:`spikestore.analysis`
and the exporters all walk a stream with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spikestore._format import dtypes
from spikestore.codecs._chunk import codec_from_config
from spikestore.codecs._identity import ChunkIdentity
from spikestore.codecs._packing import unpack_bits
from spikestore.codecs._precision import restore_precision
from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    from spikestore._format.layout import RecordLayout
    from spikestore._read.reader import StoreReader

__all__ = ["Block", "Segment", "SegmentOwner", "chunk_bounds", "iter_blocks"]


class SegmentOwner(Protocol):
    """What a segment needs from the stream it belongs to: its key, axis names and layout, and a way
    back to the segment after pickling (:meth:`segment_for`)."""

    @property
    def key(self) -> str: ...

    @property
    def dims(self) -> tuple[str, ...]: ...

    @property
    def layout(self) -> RecordLayout: ...

    def segment_for(self, rank: int, doc: dict[str, Any]) -> Segment: ...


def chunk_bounds(first: int, count: int, chunk_records: int, start: int, stop: int,
                 step: int) -> Iterator[tuple[int, int, int]]:
    """``(start, stop, chunk)`` pieces of records ``start:stop`` of a segment holding ``first:first + count``.

    Positions are the part's. Pieces are clipped to the segment, never
    cross a stored chunk of ``chunk_records`` rows, and hold at most ``step``
    records; a chunk is split into pieces counted from its first row.
    """
    i, hi = max(start, first), min(stop, first + count)
    while i < hi:
        chunk = (i - first) // chunk_records
        j = min(hi, first + (chunk + 1) * chunk_records, i + step)
        yield i, j, chunk
        i = j


@dataclass(frozen=True)
class Block:
    """Records ``start:stop`` of one part of a stream (its positions), inside one segment and one stored chunk.

    Nothing is read until :meth:`rows` or :meth:`values` is called, so a
    pass can skip blocks it does not need without reading them.
    """

    segment: Segment
    start: int
    stop: int
    chunk: int

    def __len__(self) -> int:
        return self.stop - self.start

    def rows(self) -> np.ndarray:
        """The stored rows (still bit-packed for ``bits`` segments); read-only, shared with the cache."""
        seg = self.segment
        offset = self.start - seg.start - self.chunk * seg.chunk_records
        return seg.chunk(self.chunk)[offset:offset + len(self)]

    def values(self) -> np.ndarray:
        """The records, decoded to their dtype and shape (a fresh array)."""
        return self.segment.decode_rows(self.rows())


def iter_blocks(segments: Iterable[Segment], start: int = 0, stop: int | None = None, *,
                max_records: int | None = None, max_values: int | None = None) -> Iterator[Block]:
    """Records ``start:stop`` of one part of a stream as :class:`Block` objects, in record order.

    Parameters
    ----------
    segments
        Segments of one part of a stream, in order (a one-part stream: ``stream.segments``).
    start, stop
        Positions in that part, ``0 <= start``; ``stop=None`` runs to the end.
    max_records
        At most this many records a block.
    max_values
        At most this many decoded values a block (bits decode to 8x their
        stored bytes as bool, 32x as float32); a record larger than this is
        a block of its own.

    Without a bound a block is the part of one stored chunk inside
    ``start:stop``, so a full pass reads each chunk once.
    """
    for name, bound in (("max_records", max_records), ("max_values", max_values)):
        if bound is not None and bound < 1:
            raise InvalidArgumentError(f"{name} must be >= 1, not {bound!r}")
    for seg in segments:
        step = seg.chunk_records if max_records is None else min(max_records, seg.chunk_records)
        if max_values is not None:
            step = min(step, max(1, max_values // max(1, seg.values_per_record)))
        hi = seg.stop if stop is None else stop
        for a, b, c in chunk_bounds(seg.start, seg.count, seg.chunk_records, start, hi, step):
            yield Block(seg, a, b, c)


def _segment_of(stream: SegmentOwner, rank: int, doc: dict[str, Any]) -> Segment:
    """Segment ``doc`` of rank ``rank``'s part of ``stream`` (a pickled segment, unpickled)."""
    return stream.segment_for(rank, doc)


class Segment:
    """Records ``start .. start + count`` of one part of a stream: one shape, one dtype.

    ``start`` and ``stop`` are positions in the records of the part that
    stores the segment (rank :attr:`rank`'s, in its own order); for a stream
    of one part they are stream positions.
    :meth:`Stream.record_positions <spikestore.Stream.record_positions>`
    gives the stream positions of its records for any number of parts.

    Parameters
    ----------
    stream
        The stream it belongs to (names its axes and its errors).
    rank
        The rank whose part stores it.
    doc
        The segment's entry in the stream document.
    reader
        The part's :class:`~spikestore._read.reader.StoreReader`, which reads
        and caches its chunks.
    node
        The stream's node in the part (the segment's array is under it).
    """

    def __init__(self, stream: SegmentOwner, rank: int, doc: dict[str, Any], reader: StoreReader,
                 node: str) -> None:
        self.stream = stream
        self.rank = rank
        self.doc = doc
        self.node = f"{node}/{doc['array']}"
        self.start: int = doc["start"]
        self.count: int = doc["count"]
        self.shape: tuple[int, ...] = tuple(doc["shape"])
        self.dtype = dtypes.numpy_dtype(doc["dtype"])
        self.encoding: str = doc["encoding"]
        self.stored_shape: tuple[int, ...] = tuple(doc["stored_shape"])
        self.stored_dtype = np.dtype(doc["stored_dtype"])
        self.chunk_records: int = doc["chunk_records"]
        self.codec = codec_from_config(doc["codec"])
        self.identity = ChunkIdentity.for_segment(stream.key, doc)  # what each of its chunks must carry
        self._reader = reader

    def __reduce__(self) -> tuple[Any, ...]:
        # dask's process and distributed schedulers pickle tasks: the stream reopens the store (once per
        # process), and the segment reads through it.
        return (_segment_of, (self.stream, self.rank, self.doc))

    @property
    def stop(self) -> int:
        """One past the last record (a position in its part)."""
        return self.start + self.count

    @property
    def nchunks(self) -> int:
        """Stored chunks holding committed records."""
        return -(-self.count // self.chunk_records)

    @property
    def values_per_record(self) -> int:
        """Values in one record (the product of :attr:`shape`)."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dims(self) -> tuple[str, ...]:
        """Names of the record axes: the stream's :attr:`~spikestore.Stream.dims` where they fit
        this segment's records, else what the stream's layout says for this shape."""
        names = self.stream.dims
        return names if len(names) == len(self.shape) else self.stream.layout.dims(self.shape)

    def nbytes(self) -> int:
        """Bytes of this segment's stored chunks on disk."""
        return self._reader.nbytes(self.node)

    def blocks(self, *, max_records: int | None = None, max_values: int | None = None) -> Iterator[Block]:
        """All records of this segment as :class:`Block` objects (bounds as in :func:`iter_blocks`)."""
        return iter_blocks([self], self.start, self.stop, max_records=max_records, max_values=max_values)

    def chunk(self, number: int) -> np.ndarray:
        """Decoded stored rows of chunk ``number`` (packed, for bits); read-only."""
        if int(np.prod(self.stored_shape, dtype=np.int64)) == 0:
            return np.zeros((self.chunk_records, *self.stored_shape), self.stored_dtype)
        return self._reader.chunk(self.node, number, self.codec, (self.chunk_records, *self.stored_shape),
                                  self.stored_dtype, f"stream {self.stream.key!r}", identity=self.identity)

    def chunk_rows(self, number: int, lo: int, hi: int) -> np.ndarray:
        """Stored rows ``lo:hi`` of chunk ``number``; read-only.

        Unlike :meth:`chunk`, a chunk read for the first time is decoded only
        as far as these rows need (:meth:`StoreReader.rows`), which is what
        makes a cold random read cheap.
        """
        if int(np.prod(self.stored_shape, dtype=np.int64)) == 0:
            return self.chunk(number)[lo:hi]
        return self._reader.rows(self.node, number, lo, hi, self.codec, (self.chunk_records, *self.stored_shape),
                                 self.stored_dtype, f"stream {self.stream.key!r}", identity=self.identity)

    def decode_rows(self, rows: np.ndarray) -> np.ndarray:
        """Turn stored rows ``[k, *stored_shape]`` into records ``[k, *shape]``.

        The result never shares memory with the run's chunk cache, so callers
        may modify it.
        """
        name = self.doc["dtype"]
        if self.encoding == "bits":
            out = unpack_bits(rows, self.shape[-1], dtypes.unpacked_dtype(name)).astype(self.dtype, copy=False)
        elif self.doc.get("precision") is None:
            # Lossless rows are the record's own dtype, or the bit patterns of one numpy lacks (bfloat16).
            out = rows if rows.dtype == self.dtype else rows.view(self.dtype)
        else:
            out = restore_precision(rows, self.doc["precision"], self.dtype)
        out = out.reshape((len(rows), *self.shape))
        return out if out.flags.writeable else out.copy()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Records ``start:stop`` (segment-local) as one array."""
        parts = [self.chunk_rows(b.chunk, b.start - self.start - b.chunk * self.chunk_records,
                                 b.stop - self.start - b.chunk * self.chunk_records)
                 for b in iter_blocks([self], self.start + start, self.start + stop)]
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else \
            np.zeros((0, *self.stored_shape), self.stored_dtype)
        return self.decode_rows(rows)

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

    def __repr__(self) -> str:
        rank = f" of rank {self.rank}" if self.rank else ""
        return (f"<Segment {self.doc['array']}{rank} records {self.start}:{self.stop} "
                f"shape {self.shape} {self.doc['dtype']} {self.encoding}>")
