"""Chunk identity: each chunk names the array, layout, chunk number and rows it was written for.

A checksum proves that a chunk's bytes are the ones written, not that they
are where they were written: two chunks swapped inside an array, a chunk of
another array of the same size, or a stream document edited to a larger
``count`` or to another dtype or shape of the same byte size would all read
as wrong records. So the writer appends to each chunk's compressed bytes,
inside its checksum, a frame that names what the chunk belongs to, and the
reader compares it with what the document says (docs/format.md §6, §7).

The frame is a zstd *skippable frame* (little endian)::

    u32   magic 0x184D2A5E (zstd skips any frame with magic 0x184D2A50..0x184D2A5F)
    u32   33, the size of what follows
    4     b"spkI"
    u8    1, the frame's version
    u32   rows of the chunk that held records when it was written
    u64   the chunk's number
    16    BLAKE2b-128 of the array's canonical identity (:meth:`ChunkIdentity.of`)

numcodecs' and HDF5's zstd and Blosc decoders skip it, so plain zarr and
h5py + hdf5plugin decode the chunks as if it were not there; the spike codec skips it too
(:func:`split_frame`). A document entry that says ``"identity": 1`` (a
segment entry, or a stream's ``index`` object) requires the frame in every
chunk of that array; entries written before it (no field) require its
absence, so a frame cannot be dropped from, or smuggled into, a document.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from spikestore.errors import ChecksumError, FormatError

__all__ = ["FRAME", "VERSION", "ChunkIdentity", "IdentityError", "split_frame"]

#: The frame version this spikestore writes and reads (a document's ``"identity"``).
VERSION = 1
MAGIC = 0x184D2A5E
TAG = b"spkI"
FRAME = struct.Struct("<II4sBIQ16s")
_PAYLOAD = FRAME.size - 8
#: The fields of a segment entry that say how its chunks are laid out (its identity).
SEGMENT_FIELDS = ("shape", "dtype", "encoding", "stored_shape", "stored_dtype", "chunk_records", "codec",
                  "precision")


class IdentityError(ChecksumError):
    """A chunk whose identity frame disagrees with its document (a chunk moved, or a document edited)."""


@dataclass(frozen=True)
class IdentityFrame:
    """The identity frame at the end of a chunk, parsed (:func:`split_frame`)."""

    version: int
    rows: int
    chunk: int
    digest: bytes


def split_frame(data: Any) -> tuple[memoryview, IdentityFrame | None]:
    """``data`` without a trailing identity frame, and the frame (``None`` when there is none)."""
    b = memoryview(data).cast("B")
    if len(b) >= FRAME.size:
        magic, size, tag, version, rows, chunk, digest = FRAME.unpack_from(b, len(b) - FRAME.size)
        if magic == MAGIC and size == _PAYLOAD and tag == TAG:
            return b[:len(b) - FRAME.size], IdentityFrame(version, rows, chunk, digest)
    return b, None


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


@dataclass(frozen=True)
class ChunkIdentity:
    """What every chunk of one array must carry, per its document entry.

    Build one with :meth:`for_segment` or :meth:`for_index`; the writer
    frames each chunk with :meth:`frame`, the reader checks each with
    :meth:`check`.

    Attributes
    ----------
    version
        The entry's ``"identity"`` field: ``None`` for arrays written before
        identities (their chunks carry no frame), else :data:`VERSION`.
    digest
        BLAKE2b-128 of the array's canonical identity.
    rows
        Rows of the array the document commits (its ``count``): a chunk must
        have held at least those of them that fall in it when it was written.
    chunk_records
        Rows per chunk.
    """

    version: Any
    digest: bytes
    rows: int = 0
    chunk_records: int = 1

    @classmethod
    def of(cls, fields: dict[str, Any], key: str, version: Any = VERSION, rows: int = 0,
           chunk_records: int = 1) -> ChunkIdentity:
        """The identity of an array described by ``fields`` (with its ``array`` name) in stream ``key``.

        The digest covers ``{"stream": key, **fields}`` as JSON with sorted
        keys, no spaces and ASCII escapes (``json.dumps(..., sort_keys=True,
        separators=(",", ":"), ensure_ascii=True)``).
        """
        digest = hashlib.blake2b(_canonical({"stream": key, **fields}), digest_size=16).digest()
        return cls(version, digest, rows, chunk_records)

    @classmethod
    def for_segment(cls, key: str, seg: dict[str, Any]) -> ChunkIdentity:
        """The identity of segment entry ``seg`` of stream ``key``: its name and layout fields."""
        fields = {"array": seg["array"]} | {f: seg.get(f) for f in SEGMENT_FIELDS}
        return cls.of(fields, key, seg.get("identity"), seg.get("count", 0), seg["chunk_records"])

    @classmethod
    def for_index(cls, key: str, doc: dict[str, Any], name: str, dtype: str) -> ChunkIdentity:
        """The identity of index array ``name`` (numpy dtype ``dtype``) of stream ``key``, document ``doc``."""
        index = doc["index"]
        fields = {"array": name, "dtype": dtype, "chunk_records": index["chunk_records"],
                  "codec": index["codecs"][name]}
        return cls.of(fields, key, index.get("identity"), doc.get("count", 0), index["chunk_records"])

    def frame(self, chunk: int, rows: int) -> bytes:
        """The frame of chunk ``chunk`` holding ``rows`` records (empty for arrays without identity)."""
        if self.version is None:
            return b""
        return FRAME.pack(MAGIC, _PAYLOAD, TAG, VERSION, rows, chunk, self.digest)

    def check(self, frame: IdentityFrame | None, chunk: int) -> None:
        """Raise :class:`IdentityError` unless ``frame`` is what chunk ``chunk`` must carry.

        Raises
        ------
        IdentityError
            What did not match: a frame missing or unexpected, another array
            or layout, another chunk number, fewer rows than committed.
        FormatError
            For a document that asks for an identity version newer than this one.
        """
        version = self.version
        if version is None:
            if frame is not None:
                raise IdentityError("it carries a chunk identity, but its document entry has none "
                                    "(its 'identity' field was removed)")
            return
        if type(version) is not int or version < 1:
            raise IdentityError(f"its document entry's 'identity' is {version!r}, not a version number")
        if version > VERSION:
            raise FormatError(f"its document asks for chunk identity version {version}; this spikestore "
                              f"reads {VERSION}: upgrade it")
        if frame is None:
            raise IdentityError(f"it carries no chunk identity, but its document entry says it was "
                                f"written with one (identity {version})")
        if frame.version != version:
            raise IdentityError(f"its identity has version {frame.version}, its document says {version}")
        if frame.digest != self.digest:
            raise IdentityError("its identity is that of another array or layout (it was copied from "
                                "another array, or the document's shape, dtype, encoding, chunking or "
                                "codec was edited)")
        if frame.chunk != chunk:
            raise IdentityError(f"it was written as chunk {frame.chunk} (chunks were swapped or renamed)")
        needed = min(self.chunk_records, self.rows - chunk * self.chunk_records)
        if needed > frame.rows:
            raise IdentityError(f"it held {frame.rows} rows when it was written, but the document commits "
                                f"{needed} rows of it (its count was edited)")
