"""Assemble records into chunks, and commit them in the crash-safe order.

Runs on the writer thread only. One :class:`StreamWriter` per stream keeps
the chunk being filled for its current segment and for its index arrays.
Full chunks are encoded and written as soon as they fill; a commit then
publishes them (at a flush, every ``flush_interval``, and at close) in the
order the format requires:

1. chunk data, 2. index chunks, 3. metadata (array lengths, then the stream
document whose ``count`` is the only number a reader believes).

A process killed between any two writes therefore leaves a store whose
committed prefix is complete.

Every chunk is bound to its place (:mod:`spikestore.codecs._identity`): the
array and layout it belongs to, its number and the rows it holds. New
segment entries and new streams' ``index`` objects say so with
``"identity": 2`` and hold each chunk's tag; a stream resumed from a store
written before keeps writing its index chunks as its document says (with
identity frames, or without any identity).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikestore._format import INDEX_ARRAYS, new_stream_doc, segment_array_name, segment_array_number, stream_node
from spikestore._format.checks import MAX_CHUNK_BYTES
from spikestore._write.capture import Prepared
from spikestore.backends import ArraySpec, Backend
from spikestore.codecs._chunk import ChunkCodec, codec_for, codec_from_config, index_codec
from spikestore.codecs._identity import VERSION as IDENTITY_VERSION
from spikestore.codecs._identity import ChunkIdentity, ChunkTags
from spikestore.errors import ArrayNameTakenError, InPlaceModificationError, InvalidValueError

__all__ = ["StreamWriter", "chunk_records_for"]

#: Records per chunk of the step/call/time index arrays.
#: Each commit re-encodes the partly filled chunk of all three arrays, so
#: this stays small (16384 cost ~0.5 ms of zstd per stream commit).
INDEX_CHUNK_RECORDS = 4096
_MAX_CHUNK_RECORDS = 1 << 16
#: Every chunk is a file, and creating one costs ~0.2-0.5 ms on a typical
#: Linux file system, as much as encoding ~0.3 MB of spikes. Records of at
#: least ``_BIG_RECORD`` bytes therefore go ``_MIN_BIG_RECORDS`` to a chunk
#: (as long as the chunk stays within ``_BIG_RECORD_CHUNK_CAP``), even when
#: that is more than ``chunk_bytes``. This is the writer's policy; the
#: format's own limit on a chunk is :data:`~spikestore._format.checks.MAX_CHUNK_BYTES`.
_BIG_RECORD = 64 << 10
_MIN_BIG_RECORDS = 4
_BIG_RECORD_CHUNK_CAP = 4 << 20
#: Segment names a resumed writer may skip because a crash left them damaged.
_MAX_SKIPPED_NAMES = 16


def chunk_records_for(record_bytes: int, chunk_bytes: int) -> int:
    """Records per chunk of a new segment whose stored records take ``record_bytes``.

    Raises
    ------
    InvalidValueError
        For a record larger than one chunk may be (readers refuse chunks over
        :data:`~spikestore._format.checks.MAX_CHUNK_BYTES`): its stream fails alone.
    """
    if record_bytes > MAX_CHUNK_BYTES:
        raise InvalidValueError(
            f"a record of {record_bytes} stored bytes is larger than one chunk may hold "
            f"({MAX_CHUNK_BYTES} bytes); record a selection of it (monitor neurons=/batch=) or split it")
    n = min(chunk_bytes, MAX_CHUNK_BYTES) // record_bytes
    if record_bytes >= _BIG_RECORD:
        n = max(n, min(_MIN_BIG_RECORDS, _BIG_RECORD_CHUNK_CAP // record_bytes))
    return int(min(_MAX_CHUNK_RECORDS, max(1, n)))


class _Segment:
    """The segment currently receiving records (one shape, dtype, encoding)."""

    def __init__(self, backend: Backend, key: str, node: str, number: int, start: int, p: Prepared,
                 chunk_bytes: int, level: int | None) -> None:
        self.number = number
        self.node = f"{node}/{segment_array_name(number)}"
        self.start = start
        self.encoding = p.encoding
        self.shape = p.shape
        self.dtype = p.dtype
        self.precision = p.precision
        self.stored_shape = tuple(p.stored.shape)
        self.stored_dtype = p.stored.dtype
        record_bytes = max(1, int(np.prod(self.stored_shape, dtype=np.int64)) * self.stored_dtype.itemsize)
        self.chunk_records = chunk_records_for(record_bytes, chunk_bytes)
        row_bits = self.shape[-1] if self.encoding == "bits" else None
        self.codec: ChunkCodec = codec_for(self.encoding, self.stored_dtype, level, record_bytes, row_bits,
                                           target=backend.codec_target)
        self.empty = int(np.prod(self.stored_shape, dtype=np.int64)) == 0
        self.buf = np.zeros((self.chunk_records, *self.stored_shape), dtype=self.stored_dtype)
        self.count = 0  # records appended
        self.written = 0  # records whose chunk bytes are on disk
        self.committed = 0
        self.unwritten_from = 0  # first chunk this writer has not written (none of it is committed)
        self.identity = ChunkIdentity.for_segment(key, self._layout())  # what binds its chunks
        self.tags = ChunkTags(self.identity)

    def matches(self, p: Prepared) -> bool:
        return (p.encoding == self.encoding and p.shape == self.shape and p.dtype == self.dtype
                and tuple(p.stored.shape) == self.stored_shape
                and p.stored.dtype == self.stored_dtype and p.precision == self.precision)

    def spec(self) -> ArraySpec:
        return ArraySpec(self.stored_shape, self.stored_dtype, self.chunk_records, self.codec)

    def add(self, backend: Backend, stored: np.ndarray) -> None:
        fill = self.count % self.chunk_records
        self.buf[fill] = stored
        self.count += 1
        if fill + 1 == self.chunk_records:
            try:
                self._write_chunk(backend, self.chunk_records)
            except InPlaceModificationError:
                self.count -= 1  # the record is not added: the next one takes its row
                raise

    def write_partial(self, backend: Backend) -> None:
        """Write the chunk being filled, so every appended record is on disk."""
        if self.written < self.count:
            self._write_chunk(backend, self.count % self.chunk_records or self.chunk_records)

    def _write_chunk(self, backend: Backend, fill: int) -> None:
        if not self.empty:
            self.buf[fill:] = 0  # stale rows from the previous chunk stay off disk
            chunk = (self.count - 1) // self.chunk_records
            data = self.codec.encode(self.buf, self.identity.frame(chunk, fill))
            backend.write_chunk(self.node, chunk, data, new=chunk >= self.unwritten_from)
            self.tags.wrote(chunk, fill, data, self.buf)
            self.unwritten_from = max(self.unwritten_from, chunk + 1)
        self.written = self.count

    def doc(self) -> dict[str, Any]:
        """The segment's entry: its layout, and the tags of the chunks it has written."""
        return self._layout() | self.tags.fields()

    def _layout(self) -> dict[str, Any]:
        return {
            "array": segment_array_name(self.number),
            "start": self.start,
            "count": self.committed,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "encoding": self.encoding,
            "stored_shape": list(self.stored_shape),
            "stored_dtype": self.stored_dtype.name,
            "chunk_records": self.chunk_records,
            "codec": self.codec.config,
            "precision": self.precision,
            "identity": IDENTITY_VERSION,
        }


class _Index:
    """The step/call/time arrays of one stream, filled chunk by chunk."""

    def __init__(self, key: str, node: str, doc: dict[str, Any]) -> None:
        self.node = node
        start, chunk_records = doc["count"], doc["index"]["chunk_records"]
        self.chunk_records = chunk_records
        self.codecs = {name: codec_from_config(doc["index"]["codecs"][name]) for name in INDEX_ARRAYS}
        # The document of a stream resumed from an older store has no identity: nor do its new chunks.
        self.identities = {name: ChunkIdentity.for_index(key, doc, name, dt) for name, dt in INDEX_ARRAYS.items()}
        self.tags = {name: ChunkTags(identity) for name, identity in self.identities.items()}
        self.bufs = {name: np.zeros(chunk_records, dtype=dt) for name, dt in INDEX_ARRAYS.items()}
        self.count = start
        self.written = start
        # Chunks from here on hold no committed record (a resumed partial chunk does).
        self.unwritten_from = -(-start // chunk_records)

    def create(self, backend: Backend) -> None:
        for name, dt in INDEX_ARRAYS.items():
            backend.create_array(f"{self.node}/{name}",
                                 ArraySpec((), np.dtype(dt), self.chunk_records, self.codecs[name]))

    def resume(self, backend: Backend) -> None:
        """Reload the partly filled last chunk of a store opened for append."""
        fill = self.count % self.chunk_records
        if not fill:
            return
        chunk = self.count // self.chunk_records
        for name, dt in INDEX_ARRAYS.items():
            raw = backend.read_chunk(f"{self.node}/{name}", chunk)
            if raw is not None:
                self.bufs[name][:] = self.codecs[name].decode(raw, (self.chunk_records,), dt,
                                                              identity=self.identities[name], chunk=chunk)
            self.bufs[name][fill:] = 0

    def add(self, backend: Backend, step: int, call: int, t: float) -> None:
        fill = self.count % self.chunk_records
        self.bufs["step"][fill] = step
        self.bufs["call"][fill] = call
        self.bufs["time"][fill] = t
        self.count += 1
        if fill + 1 == self.chunk_records:
            self._write(backend)

    def write_partial(self, backend: Backend) -> None:
        if self.written < self.count:
            self._write(backend)

    def _write(self, backend: Backend) -> None:
        chunk = (self.count - 1) // self.chunk_records
        fill = self.count - chunk * self.chunk_records
        new = chunk >= self.unwritten_from
        for name, buf in self.bufs.items():
            buf[fill:] = 0
            data = self.codecs[name].encode(buf, self.identities[name].frame(chunk, fill))
            backend.write_chunk(f"{self.node}/{name}", chunk, data, new=new)
            self.tags[name].wrote(chunk, fill, data, buf)
        self.unwritten_from = max(self.unwritten_from, chunk + 1)
        self.written = self.count

    def entry(self, index: dict[str, Any]) -> dict[str, Any]:
        """The stream document's ``index`` object ``index`` with the tags of the chunks written."""
        fields = {name: tags.fields() for name, tags in self.tags.items()}
        out = {k: v for k, v in index.items() if k not in ("tags", "tail")}
        if any(fields.values()):
            out["tags"] = {name: f["tags"] for name, f in fields.items()}
            tails = {name: f["tail"] for name, f in fields.items() if "tail" in f}
            if tails:
                out["tail"] = tails
        return out

    def set_length(self, backend: Backend, length: int, *, exact: bool) -> None:
        for name in INDEX_ARRAYS:
            backend.set_length(f"{self.node}/{name}", length, exact=exact)


class StreamWriter:
    """Everything the writer knows about one stream.

    Parameters
    ----------
    backend
        Where chunks and documents go.
    key
        The stream key ``quantity/layer``.
    chunk_bytes
        Target size of one uncompressed chunk of stored (packed) records.
    doc
        The stream's committed document when resuming a store opened with
        ``mode="a"``; ``None`` for a new stream.
    """

    def __init__(self, backend: Backend, key: str, *, chunk_bytes: int,
                 level: int | None = None, doc: dict[str, Any] | None = None) -> None:
        self.backend = backend
        self.key = key
        self.node = stream_node(key)
        self.chunk_bytes = chunk_bytes
        self.level = level
        if doc is None:
            doc = new_stream_doc(key, INDEX_CHUNK_RECORDS, {
                name: index_codec(np.dtype(dt), target=backend.codec_target).config
                for name, dt in INDEX_ARRAYS.items()})
            doc["index"]["identity"] = IDENTITY_VERSION
        self.doc = doc
        self.closed_segments: list[dict[str, Any]] = list(self.doc["segments"])
        self.segment: _Segment | None = None
        start = self.doc["count"]
        self.index = _Index(key, self.node, self.doc)
        self.committed = start
        self._unsized: list[tuple[str, int]] = []  # closed segments whose length is not set
        self.doc_changed = False  # selection/attrs changed since the last commit
        if self.committed == 0 and not self.closed_segments:
            backend.write_doc(self.node, self.doc)
            self.index.create(backend)
        else:
            self.index.resume(backend)
            # The segment open when the last writer stopped may have kept a
            # length rounded up to its chunk (a crash before the final
            # commit); records go to a new segment now, so size it exactly.
            last = self.closed_segments[-1] if self.closed_segments else None
            if last is not None:
                self._unsized.append((f"{self.node}/{last['array']}", last["count"]))

    @property
    def count(self) -> int:
        """Records appended to the stream (committed or not)."""
        return int(self.index.count)

    def raw_segment_fits(self, shape: tuple[int, ...], dtype: str, precision: str | None) -> bool:
        """Whether the open segment is raw and holds records like this one."""
        seg = self.segment
        return seg is not None and seg.encoding == "raw" and seg.shape == shape and \
            seg.dtype == dtype and seg.precision == precision

    def add(self, p: Prepared, step: int, call: int, t: float) -> None:
        """Append one prepared record (its data chunk may be written now)."""
        seg = self.segment
        if seg is None or not seg.matches(p):
            if seg is not None:
                seg.write_partial(self.backend)
                self.closed_segments.append(seg.doc() | {"count": seg.count})
                self._unsized.append((seg.node, seg.count))
            seg = self.segment = self._new_segment(p)
        seg.add(self.backend, p.stored)
        self.index.add(self.backend, step, call, t)

    def _new_segment(self, p: Prepared) -> _Segment:
        # Numbers follow the last segment's; one whose name a crash left
        # unusable is skipped (readers go by each segment's "array" name).
        last = self.closed_segments[-1]["array"] if self.closed_segments else None
        first = segment_array_number(last) + 1 if last else 0
        number = first
        while True:
            seg = _Segment(self.backend, self.key, self.node, number, self.count, p, self.chunk_bytes, self.level)
            try:
                self.backend.create_array(seg.node, seg.spec())
                return seg
            except ArrayNameTakenError:
                if number - first == _MAX_SKIPPED_NAMES:
                    raise
                number += 1

    def commit(self, *, final: bool = False) -> None:
        """Publish every appended record: data, then index, then metadata.

        The chunk being filled is written first (zero-padded), so every
        record becomes visible. Array lengths may run ahead of the count to
        a chunk boundary until the ``final`` commit (at close), which makes
        them exact for plain zarr readers.
        """
        seg = self.segment
        if seg is not None:
            seg.write_partial(self.backend)
        visible = self.count if seg is None else seg.start + seg.written
        if visible <= self.committed and not self.doc_changed and not self._doc_stale(seg):
            if final:
                self._size_closed()
                self._set_lengths(seg, exact=True)
            return
        # Index chunks must cover every visible record before the count moves.
        if self.index.written < visible:
            self.index.write_partial(self.backend)
        sync = self.backend.durable
        if sync:
            self.backend.sync()
        self._size_closed()
        self.committed = visible
        if seg is not None:
            seg.committed = seg.written
        self._set_lengths(seg, exact=final)
        segs = list(self.closed_segments)
        if seg is not None:
            segs.append(seg.doc())
        self.doc = self.doc | {"count": visible, "segments": segs, "index": self.index.entry(self.doc["index"])}
        self.backend.write_doc(self.node, self.doc)
        if sync:
            self.backend.sync()
        self.doc_changed = False

    def _size_closed(self) -> None:
        """Give closed segments their exact lengths."""
        for node, length in self._unsized:
            self.backend.set_length(node, length)
        self._unsized.clear()

    def _set_lengths(self, seg: _Segment | None, *, exact: bool) -> None:
        if seg is not None:
            self.backend.set_length(seg.node, seg.committed, exact=exact)
        self.index.set_length(self.backend, self.committed, exact=exact)

    def _doc_stale(self, seg: _Segment | None) -> bool:
        # A segment opened since the last commit must reach the document even
        # before it has records on disk (so its array is never orphaned).
        n_docs = len(self.doc["segments"])
        return n_docs != len(self.closed_segments) + (seg is not None)
