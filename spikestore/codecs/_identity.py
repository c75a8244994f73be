"""Chunk identity: each chunk is bound to the array, layout, chunk number and rows it was written for.

A checksum proves that a chunk's bytes are the ones written, not that they
are where they were written: two chunks swapped inside an array, a stale
copy of a chunk, a chunk of another array of the same size, or a stream
document edited to a larger ``count`` or to another dtype or shape of the
same byte size would all read as wrong records. Every chunk is therefore
bound to what its document says it is (docs/format.md §6):

* **identity 2** (what the writer writes): the chunk's bytes are exactly
  what its declared codecs produce, so any Zarr v3 reader decodes them. The
  document entry holds one 32-bit *tag* per chunk, CRC-32C of the array's
  identity digest, the chunk's number, its committed rows and the chunk's
  checksum (:meth:`ChunkIdentity.chunk_tag`). The array's last chunk,
  when partly filled, also has a *tail* tag over its committed rows alone
  (:meth:`ChunkIdentity.rows_tag`): a writer killed after rewriting that
  chunk with more rows, before its next commit, leaves bytes the tag does
  not know, whose committed rows the tail tag still proves.
* **identity 1** (stores written before): a 41-byte zstd skippable frame
  after the compressed bytes, inside the checksum, names the array, the
  chunk and its rows (:class:`IdentityFrame`, :func:`split_frame`).
* no ``identity`` field (older still): neither.

A document entry's ``identity`` (a segment entry, or a stream's ``index``
object) says which one every chunk of that array carries, so a frame cannot
be dropped from, or smuggled into, a document.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from spikestore.errors import ChecksumError, FormatError

__all__ = ["FRAME", "FRAME_VERSION", "VERSION", "ChunkIdentity", "ChunkTags", "IdentityError", "split_frame"]

#: The identity version this spikestore writes (a document's ``"identity"``): tags in the document.
VERSION = 2
#: The identity version of chunks that carry an identity frame (read, and written for arrays resumed from it).
FRAME_VERSION = 1
#: What precedes a chunk's bytes in its tag, and a last chunk's committed rows in its tail tag.
TAG_PREFIX = b"spkT"
TAIL_PREFIX = b"spkR"
_TAG_FIELDS = struct.Struct("<QI")
#: Other chunk numbers and row counts a mismatching chunk is tried against, to say what happened.
_DIAGNOSE_TRIES = 64
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


def _tag_list(text: Any) -> tuple[int, ...] | None:
    """The tags a document entry's ``tags`` string holds (base64 of little-endian ``uint32``), None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    if len(raw) % 4:
        return None
    return tuple(int(t) for t in np.frombuffer(raw, dtype="<u4"))


def _crc(prefix: bytes, data: Any) -> int:
    return int(google_crc32c.extend(google_crc32c.value(prefix), bytes(data)))


@dataclass(frozen=True)
class ChunkIdentity:
    """What every chunk of one array must be bound to, per its document entry.

    Build one with :meth:`for_segment` or :meth:`for_index`. The writer
    frames each chunk with :meth:`frame` (identity 1) or records its tags
    in a :class:`ChunkTags` (identity 2); the reader checks each chunk with
    :meth:`check` (identity 1) or :meth:`check_chunk` and
    :meth:`check_rows` (identity 2).

    Attributes
    ----------
    version
        The entry's ``"identity"`` field: ``None`` for arrays written before
        identities, :data:`FRAME_VERSION` for framed chunks, :data:`VERSION`
        for tags.
    digest
        BLAKE2b-128 of the array's canonical identity.
    rows
        Rows of the array the document commits (its ``count``).
    chunk_records
        Rows per chunk.
    tags
        Identity 2: the entry's tag of each committed chunk (None when the
        entry holds no readable ``tags``).
    tail
        Identity 2: the entry's tag of the committed rows of a partly
        filled last chunk, else None.
    """

    version: Any
    digest: bytes
    rows: int = 0
    chunk_records: int = 1
    tags: tuple[int, ...] | None = None
    tail: Any = None

    @classmethod
    def of(cls, fields: dict[str, Any], key: str, version: Any = VERSION, rows: int = 0,
           chunk_records: int = 1, tags: Any = None, tail: Any = None) -> ChunkIdentity:
        """The identity of an array described by ``fields`` (with its ``array`` name) in stream ``key``.

        The digest covers ``{"stream": key, **fields}`` as JSON with sorted
        keys, no spaces and ASCII escapes (``json.dumps(..., sort_keys=True,
        separators=(",", ":"), ensure_ascii=True)``). ``tags`` is the
        entry's ``tags`` string and ``tail`` its ``tail`` (identity 2).
        """
        digest = hashlib.blake2b(_canonical({"stream": key, **fields}), digest_size=16).digest()
        return cls(version, digest, rows, chunk_records, _tag_list(tags) if tags is not None else None, tail)

    @classmethod
    def for_segment(cls, key: str, seg: dict[str, Any]) -> ChunkIdentity:
        """The identity of segment entry ``seg`` of stream ``key``: its name and layout fields."""
        fields = {"array": seg["array"]} | {f: seg.get(f) for f in SEGMENT_FIELDS}
        return cls.of(fields, key, seg.get("identity"), seg.get("count", 0), seg["chunk_records"],
                      seg.get("tags"), seg.get("tail"))

    @classmethod
    def for_index(cls, key: str, doc: dict[str, Any], name: str, dtype: str) -> ChunkIdentity:
        """The identity of index array ``name`` (numpy dtype ``dtype``) of stream ``key``, document ``doc``."""
        index = doc["index"]
        fields = {"array": name, "dtype": dtype, "chunk_records": index["chunk_records"],
                  "codec": index["codecs"][name]}
        tags, tail = index.get("tags"), index.get("tail")
        return cls.of(fields, key, index.get("identity"), doc.get("count", 0), index["chunk_records"],
                      tags.get(name) if isinstance(tags, dict) else tags,
                      tail.get(name) if isinstance(tail, dict) else tail)

    @property
    def tagged(self) -> bool:
        """Whether the chunks are bound by tags in the document (identity 2) rather than by frames."""
        return bool(self.version == VERSION)

    def frame(self, chunk: int, rows: int) -> bytes:
        """The frame of chunk ``chunk`` holding ``rows`` records (empty unless the array is framed)."""
        if self.version != FRAME_VERSION:
            return b""
        return FRAME.pack(MAGIC, _PAYLOAD, TAG, FRAME_VERSION, rows, chunk, self.digest)

    def chunk_tag(self, chunk: int, rows: int, data: Any) -> int:
        """The tag of chunk ``chunk`` holding ``rows`` committed rows, whose stored bytes are ``data``:
        CRC-32C of ``b"spkT" || digest || u64 chunk || u32 rows || checksum``.

        ``checksum`` is the chunk's last 4 bytes, the checksum of its content
        that every read verifies, so the tag binds the content at no cost.
        (Not a CRC over all of ``data``: a CRC over bytes that end with their
        own CRC-32C is the same for any content.)
        """
        return _crc(TAG_PREFIX + self.digest + _TAG_FIELDS.pack(chunk, rows), bytes(memoryview(data).cast("B")[-4:]))

    def rows_tag(self, chunk: int, rows: int, stored: np.ndarray) -> int:
        """The tail tag of chunk ``chunk``: CRC-32C of ``b"spkR" || digest || u64 chunk || u32 rows`` and
        the C-order little-endian bytes of its first ``rows`` decoded rows (``stored``, rows on axis 0)."""
        part = np.ascontiguousarray(stored[:rows])
        if part.dtype.byteorder == ">":
            part = part.astype(part.dtype.newbyteorder("<"))
        return _crc(TAIL_PREFIX + self.digest + _TAG_FIELDS.pack(chunk, rows), part.reshape(-1).view(np.uint8))

    def _needed(self, chunk: int) -> int:
        """Rows of chunk ``chunk`` that the document commits."""
        return max(0, min(self.chunk_records, self.rows - chunk * self.chunk_records))

    def check(self, frame: IdentityFrame | None, chunk: int) -> None:
        """Raise :class:`IdentityError` unless ``frame`` is what chunk ``chunk`` must carry.

        For arrays of identity 1 and without identity; identity 2 chunks
        carry no frame and are checked by :meth:`check_chunk`.

        Raises
        ------
        IdentityError
            What did not match: a frame missing or unexpected, another array
            or layout, another chunk number, fewer rows than committed.
        FormatError
            For a document that asks for an identity version newer than this one.
        """
        version = self._known_version()
        if version is None:
            if self.tags is not None:
                raise IdentityError("its document entry holds chunk tags but has no identity "
                                    "(its 'identity' field was removed)")
            if frame is not None:
                raise IdentityError("it carries a chunk identity, but its document entry has none "
                                    "(its 'identity' field was removed)")
            return
        if version == VERSION:
            raise IdentityError("its document entry binds it by tags, but it was read as a framed chunk")
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
        needed = self._needed(chunk)
        if needed > frame.rows:
            raise IdentityError(f"it held {frame.rows} rows when it was written, but the document commits "
                                f"{needed} rows of it (its count was edited)")

    def check_chunk(self, data: Any, chunk: int) -> bool:
        """Check the stored bytes ``data`` of chunk ``chunk`` against the document's tags (identity 2).

        Returns
        -------
        bool
            True when the chunk's tag matches. False when it does not but
            the chunk is the array's partly filled last one, whose committed
            rows the caller must then check with :meth:`check_rows` once
            decoded (the writer may have rewritten it with more rows after
            its last commit).

        Raises
        ------
        IdentityError
            When the chunk is not the one the document names: swapped,
            stale, copied from another array, or the document's layout,
            count or tags edited.
        """
        tags = self.tags
        chunks = -(-self.rows // self.chunk_records)
        if tags is None or len(tags) != chunks:
            got = "no readable tags" if tags is None else f"{len(tags)} chunk tags"
            raise IdentityError(f"its document entry holds {got} for {chunks} committed chunks "
                                "(its tags or its count were edited)")
        needed = self._needed(chunk)
        if chunk >= chunks:
            raise IdentityError(f"it is chunk {chunk}, past the {chunks} chunks the document commits")
        if self.chunk_tag(chunk, needed, data) == tags[chunk]:
            return True
        if chunk == chunks - 1 and needed < self.chunk_records and self.tail is not None:
            return False
        raise IdentityError(self._mismatch(data, chunk, needed, tags))

    def _moved(self, data: Any, chunk: int, tags: tuple[int, ...]) -> int | None:
        """The other chunk of this array whose tag ``data`` has, trying the nearest ones only (each try
        is one small CRC), so a damaged store of many chunks reports fast."""
        near = sorted(range(len(tags)), key=lambda j: abs(j - chunk))[:_DIAGNOSE_TRIES]
        return next((j for j in near if j != chunk and self.chunk_tag(j, self._needed(j), data) == tags[j]), None)

    def _mismatch(self, data: Any, chunk: int, needed: int, tags: tuple[int, ...]) -> str:
        """Why the tag of chunk ``chunk`` does not match: another chunk of the array, fewer rows, or neither."""
        moved = self._moved(data, chunk, tags)
        if moved is not None:
            return f"it is chunk {moved} of this array (chunks were swapped or renamed)"
        for rows in range(needed - 1, max(0, needed - _DIAGNOSE_TRIES) - 1, -1):
            if self.chunk_tag(chunk, rows, data) == tags[chunk]:
                return (f"it held {rows} rows when it was written, but the document commits {needed} rows "
                        "of it (its count was edited)")
        return ("its bytes are not those its document's tag names: a stale copy, a chunk of another array, "
                "or the document's shape, dtype, encoding, chunking or codec edited")

    def check_rows(self, decoded: np.ndarray, chunk: int, data: Any) -> None:
        """Check the committed rows of a last chunk whose tag did not match (:meth:`check_chunk`);
        ``data`` is its stored bytes.

        Raises
        ------
        IdentityError
            When its committed rows are not those the document's tail tag names.
        """
        needed = self._needed(chunk)
        if self.rows_tag(chunk, needed, decoded) == self.tail:
            return
        moved = self._moved(data, chunk, self.tags or ())
        if moved is not None:  # (only now: a rewritten last chunk may hold what another chunk holds)
            raise IdentityError(f"it is chunk {moved} of this array (chunks were swapped or renamed)")
        for rows in range(needed - 1, max(0, needed - _DIAGNOSE_TRIES) - 1, -1):
            if self.rows_tag(chunk, rows, decoded) == self.tail:
                raise IdentityError(f"it held {rows} rows when it was last committed, but the document commits "
                                    f"{needed} rows of it (its count was edited)")
        raise IdentityError("its committed rows are not those its document's tags name: a stale copy, a chunk "
                            "of another array, or the document's layout or count edited")

    def _known_version(self) -> int | None:
        version = self.version
        if version is None:
            return None
        if type(version) is not int or version < 1:
            raise IdentityError(f"its document entry's 'identity' is {version!r}, not a version number")
        if version > VERSION:
            raise FormatError(f"its document asks for chunk identity version {version}; this spikestore "
                              f"reads {VERSION}: upgrade it")
        return version


class ChunkTags:
    """The writer's record of the tags of one array's chunks (identity 2; inert for older arrays).

    Parameters
    ----------
    identity
        The array's identity, with the tags its document holds (an array
        resumed for appending keeps them).
    """

    def __init__(self, identity: ChunkIdentity) -> None:
        self.identity = identity
        self.tags: list[int] = list(identity.tags or ())
        self.tail: int | None = identity.tail if isinstance(identity.tail, int) else None

    def wrote(self, chunk: int, rows: int, data: bytes, stored: np.ndarray) -> None:
        """Note that chunk ``chunk``, holding ``rows`` rows of ``stored`` (the whole chunk buffer), was
        written as ``data``; it is now the array's last chunk."""
        identity = self.identity
        if not identity.tagged:
            return
        del self.tags[chunk:]  # (a rewritten last chunk replaces its tag; chunks are written in order)
        self.tags.append(identity.chunk_tag(chunk, rows, data))
        self.tail = identity.rows_tag(chunk, rows, stored) if rows < identity.chunk_records else None

    def fields(self) -> dict[str, Any]:
        """The entry's ``tags`` and ``tail`` (empty for arrays without tags)."""
        if not self.identity.tagged:
            return {}
        text = base64.b64encode(np.asarray(self.tags, dtype="<u4").tobytes()).decode("ascii")
        return {"tags": text} | ({} if self.tail is None else {"tail": self.tail})
