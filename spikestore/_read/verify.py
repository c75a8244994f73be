"""``spikestore verify``: check that a store is intact, one problem per line.

Checks the root and stream documents against the JSON Schemas, the segment
bookkeeping (contiguous, counts adding up), and decodes every chunk inside
the committed range of every segment and index array (each carries a
checksum: CRC-32C in Zarr stores, Fletcher-32 in HDF5 files; a chunk missing
there is damage, never a fill value).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from spikestore._format import INDEX_ARRAYS, find_stream_doc, validate_doc
from spikestore.codecs._chunk import ChecksumError, codec_from_config
from spikestore.errors import SpikestoreError

__all__ = ["verify"]


def verify(path: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Return the problems found in the store at ``path`` (empty when intact)."""
    from spikestore.backends import open_backend

    p = Path(path)
    if not p.exists():
        return [f"{p}: no such file or directory"]
    problems: list[str] = []
    try:
        be = open_backend(p, backend=None, writable=False)
    except Exception as exc:  # noqa: BLE001 - report, never trace back
        return [f"{p}: cannot be opened: {exc}"]
    try:
        try:
            root = validate_doc(be.read_doc(""), "root", str(p))
        except (SpikestoreError, ValueError, OSError) as exc:
            return [f"{p}: root metadata: {exc}"]
        jobs: list[tuple[str, str, int, object, tuple[int, ...], str]] = []
        for key in root["streams"]:
            try:
                node, doc = find_stream_doc(be.read_doc, key)
                if doc is None:
                    continue  # listed before its first commit: no records yet
                validate_doc(doc, "stream", f"{p}:{key}")
            except (SpikestoreError, ValueError, OSError) as exc:
                problems.append(f"{key}: stream metadata: {exc}")
                continue
            expected = 0
            for seg in doc["segments"]:
                if seg["start"] != expected:
                    problems.append(f"{key}: segment {seg['array']} starts at record {seg['start']}, "
                                    f"expected {expected}")
                expected = seg["start"] + seg["count"]
                size = 1
                for d in seg["stored_shape"]:
                    size *= d
                if size == 0:
                    continue
                codec = codec_from_config(seg["codec"])
                shape = (seg["chunk_records"], *seg["stored_shape"])
                for c in range(-(-seg["count"] // seg["chunk_records"])):
                    jobs.append((key, f"{node}/{seg['array']}", c, codec, shape, seg["stored_dtype"]))
            if expected != doc["count"]:
                problems.append(f"{key}: segments hold {expected} records, the stream says {doc['count']}")
            rpc = doc["index"]["chunk_records"]
            for name, dtype in INDEX_ARRAYS.items():
                codec = codec_from_config(doc["index"]["codecs"][name])
                for c in range(-(-doc["count"] // rpc)):
                    jobs.append((key, f"{node}/{name}", c, codec, (rpc,), dtype))
        for i, (key, node, c, codec, shape, dtype) in enumerate(jobs):
            try:
                raw = be.read_chunk(node, c)
                if raw is None:
                    problems.append(f"{key}: chunk {c} of {node} is missing inside the committed range")
                else:
                    codec.decode(raw, shape, dtype)  # type: ignore[attr-defined]
            except ChecksumError as exc:
                problems.append(f"{key}: chunk {c} of {node} is corrupt: {exc}")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{key}: chunk {c} of {node} cannot be read: {type(exc).__name__}: {exc}")
            if progress is not None:
                progress(i + 1, len(jobs))
    finally:
        be.close()
    return problems
