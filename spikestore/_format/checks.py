"""What a document must satisfy beyond its JSON Schema (``docs/format.md`` §2, §3).

A schema checks types and names one field at a time; these functions check
what follows from several fields together: segments that start at 0 and
follow each other, counts that add up, stored shapes and dtypes that follow
from the logical ones (§3.1), and sizes bounded before a reader allocates
anything (:data:`MAX_CHUNK_BYTES`, :data:`MAX_RECORD_DIMS`). Each returns
the problems it finds, as phrases; :func:`spikestore._format.documents.load_doc`
turns them into one :class:`~spikestore.errors.DamagedStoreError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spikestore._format.dtypes import LOSSY_DTYPES
from spikestore._format.names import split_key
from spikestore.errors import InvalidArgumentError

__all__ = ["MAX_CHUNK_BYTES", "MAX_DOCUMENT_BYTES", "MAX_RECORD_DIMS", "max_stored_chunk_bytes", "root_problems",
           "stream_problems"]

#: Most bytes one decoded chunk may take (``chunk_records`` times the bytes of one stored
#: record): the format's limit, which readers enforce. Blosc's own buffers stop at 2**31
#: bytes. How big the writer makes its chunks below this is the writer's choice
#: (``Store(chunk_bytes=...)``), not the format's.
MAX_CHUNK_BYTES = 1 << 31
#: Most bytes one stored document (a ``zarr.json``) may take: a reader refuses a bigger file as
#: damage before reading it (docs/format.md §3.2).
MAX_DOCUMENT_BYTES = 256 << 20
#: Bytes a stored chunk may take beyond twice its decoded size: codec headers, the identity
#: frame and the checksum.
_CHUNK_OVERHEAD = 1 << 20
#: Most dimensions a record may have: its array adds the record axis, and HDF5 and numpy's
#: bit unpacking stop at 32 dimensions (the writer refuses more at ``append``).
MAX_RECORD_DIMS = 31
#: Index arrays hold these many bytes per record (``step`` and ``time``; ``call`` takes 4).
_INDEX_RECORD_BYTES = 8
#: Records without values take no memory, but numpy still multiplies their non-zero
#: dimensions (times the item size, at most 16 bytes) and refuses products over 2**63.
_MAX_EMPTY = 1 << 58
#: Earlier versions stored keepbits rows as BitRound's integer view of the floats.
_KEEPBITS_VIEWS = {"float32": "int32", "float64": "int64"}


def max_stored_chunk_bytes(decoded: int) -> int:
    """Most bytes a stored chunk that decodes to ``decoded`` bytes may take (docs/format.md §6).

    No codec the format names stores a chunk in more than twice its decoded
    size plus :data:`_CHUNK_OVERHEAD` (they store incompressible data
    verbatim with a small header), and no decoded chunk is over
    :data:`MAX_CHUNK_BYTES`: a reader refuses a bigger file as damage before
    reading any of it.
    """
    return 2 * min(max(decoded, 0), MAX_CHUNK_BYTES) + _CHUNK_OVERHEAD


def root_problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong in a root document that follows its schema (empty when nothing)."""
    problems = []
    for key in doc["streams"]:
        try:
            split_key(key)
        except InvalidArgumentError:
            problems.append(f"streams lists {key!r}, which is not a stream key (quantity/layer)")
    return problems


def stream_problems(doc: dict[str, Any], key: str | None = None) -> list[str]:
    """What is wrong in a stream document that follows its schema (empty when nothing).

    Parameters
    ----------
    doc
        The document.
    key
        The stream key the root lists it under, when known: ``quantity`` and
        ``layer`` must name it.
    """
    problems = []
    if key is not None and split_key(key) != (doc["quantity"], doc["layer"]):
        problems.append(f"it describes stream {doc['quantity'] + '/' + doc['layer']!r}, not {key!r}")
    rpc = doc["index"]["chunk_records"]
    if rpc * _INDEX_RECORD_BYTES > MAX_CHUNK_BYTES:
        problems.append(f"index chunk_records {rpc} makes chunks of over {MAX_CHUNK_BYTES} bytes")
    expected = 0
    names: set[str] = set()
    for k, seg in enumerate(doc["segments"]):
        where = f"segments[{k}] ({seg['array']})"
        if seg["array"] in names:
            problems.append(f"{where}: array {seg['array']} is listed twice")
        names.add(seg["array"])
        if seg["start"] != expected:
            problems.append(f"{where} starts at record {seg['start']}, expected {expected}")
        expected = seg["start"] + seg["count"]
        problems.extend(f"{where}: {p}" for p in segment_problems(seg))
    if expected != doc["count"]:
        problems.append(f"its segments end at record {expected}, but count is {doc['count']}")
    return problems


def segment_problems(seg: dict[str, Any]) -> list[str]:
    """What is wrong in one segment entry that follows its schema (§3.1)."""
    shape, dtype, stored_dtype = seg["shape"], seg["dtype"], seg["stored_dtype"]
    precision = seg["precision"]
    if len(shape) > MAX_RECORD_DIMS:
        return [f"records of {len(shape)} dimensions (at most {MAX_RECORD_DIMS})"]
    problems = []
    if seg["encoding"] == "bits":
        if not shape or dtype.startswith("complex"):
            problems.append(f"records of shape {shape} and dtype {dtype} are never bit-packed")
            return problems
        want_shape = [*shape[:-1], -(-shape[-1] // 8)]
        allowed = ["uint8"]
        if precision is not None:
            problems.append(f"bit-packed records are exact, but precision is {precision!r}")
        row_bits = seg["codec"].get("row_bits")
        if row_bits is not None and row_bits != shape[-1]:
            problems.append(f"codec row_bits {row_bits} differs from the record's last axis ({shape[-1]})")
    else:
        want_shape = list(shape)
        if precision is None:
            allowed = ["uint16" if dtype == "bfloat16" else dtype]
        elif dtype not in LOSSY_DTYPES:
            problems.append(f"precision {precision!r} applies to float32/float64 records, not {dtype}")
            allowed = [stored_dtype]
        elif precision == "bf16":
            allowed = ["uint16"]
        else:
            allowed = [dtype, _KEEPBITS_VIEWS[dtype]]
    if seg["stored_shape"] != want_shape:
        problems.append(f"stored_shape {seg['stored_shape']} does not follow from shape {shape} "
                        f"and encoding {seg['encoding']} (expected {want_shape})")
    if stored_dtype not in allowed:
        problems.append(f"stored_dtype {stored_dtype} does not follow from dtype {dtype}, encoding "
                        f"{seg['encoding']} and precision {precision!r} (expected {' or '.join(allowed)})")
    record = math.prod(seg["stored_shape"]) * np.dtype(stored_dtype).itemsize
    chunk = seg["chunk_records"] * record
    if chunk > MAX_CHUNK_BYTES:
        problems.append(f"a chunk of {seg['chunk_records']} records of {record} bytes would decode to "
                        f"{chunk} bytes, over the format's limit of {MAX_CHUNK_BYTES}")
    elif not record and seg["chunk_records"] * math.prod(max(1, d) for d in shape) > _MAX_EMPTY:
        problems.append(f"records of shape {shape} hold no values, but a chunk of {seg['chunk_records']} "
                        "of them has dimensions too large for numpy to describe")
    return problems
