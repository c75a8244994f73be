"""``spikestore verify``: check that a store is intact, one problem per line.

Checks, in order, and reports every failure as a line instead of raising:

1. the root and every listed stream's document, read and checked the one way
   every reader reads them (:func:`~spikestore._read.documents.load_doc`: schema,
   consistency, size limits, a group that lost its document);
2. the metadata of every segment and index array against its document
   (shape at least the committed count, record shape, chunk grid, dtype,
   codecs: the backend's :meth:`~spikestore.backends.Backend.inspect`);
3. every chunk inside the committed range, decoded through the reader's own
   :func:`~spikestore._read.reader.read_chunk` (each carries a checksum:
   CRC-32C in Zarr stores, Fletcher-32 in HDF5 files; a chunk missing there
   is damage, never a fill value);
4. stream groups the root does not list that hold committed records (a
   damaged root lost them).

An HDF5 file that no writer has open is read without SWMR, so an unreadable
object fails at once instead of after a second of retries
(:func:`spikestore.backends.hdf5._inspect.open_for_verify`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spikestore._failures import is_storage
from spikestore._format import INDEX_ARRAYS, join_key, rank_part, stream_node, unbounded_stream_node
from spikestore._read.documents import load_doc, load_stream_doc, not_a_store_file
from spikestore._read.reader import index_identity, read_chunk, segment_identity
from spikestore.backends import ArraySpec, StoreURL, backend_name_for, location, open_backend, part_location
from spikestore.codecs._chunk import ChunkCodec, codec_from_config
from spikestore.codecs._identity import ChunkIdentity
from spikestore.errors import DamagedStoreError, ReadOnlyError, SpikestoreError, StorageError

__all__ = ["verify"]

#: Problem lines one array may add before the rest of its chunks are skipped.
MAX_ARRAY_PROBLEMS = 20

Progress = Callable[[int, int], None]


def verify(path: str | os.PathLike[str] | StoreURL, progress: Progress | None = None, *,
           storage_options: dict[str, Any] | None = None) -> list[str]:
    """Return the problems found in the store at ``path`` (empty when intact).

    Parameters
    ----------
    path
        A Zarr or HDF5 store, or the URL of a Zarr store on object storage
        (``s3://bucket/run.zarr``, ``docs/object-storage.md``).
    progress
        Called as ``progress(done, total)`` after each chunk is checked.
    storage_options
        For a URL: what reaches it, as :func:`spikestore.open` takes them
        (a :class:`~spikestore.backends.StoreURL` carries its own).

    Never raises for what it finds: every failure of the store is a line of
    the result. A run recorded by several ranks (``docs/format.md`` §1.2)
    is checked part by part; a part's problems start with ``rank <r>:``.

    Raises
    ------
    StorageError, ReadOnlyError
        When the storage fails instead: an object store that cannot be
        reached or errs, access denied. Nothing is said about the store then
        (what could not be read is not reported as damage); the message says
        how many problems were found before, and what to check. Run verify
        again once the storage answers.
    InvalidArgumentError
        For ``storage_options`` with a local path.
    """
    p = location(path, storage_options)
    if isinstance(p, Path) and not p.exists():
        return [f"{p}: no such file or directory"]
    odd = not_a_store_file(p) if isinstance(p, Path) else None
    if odd is not None:
        return [odd]
    try:
        be, problems = _open(p)
    except Exception as exc:  # report, never trace back
        if is_storage(exc):
            raise _stopped(p, exc, 0) from exc
        return [f"{p}: cannot be opened: {type(exc).__name__}: {exc}"]
    if be is None:
        return problems
    parts: list[tuple[int, Path | StoreURL]] = []
    try:
        parts = _check(be, p, problems, progress)
    except Exception as exc:  # whatever was left unchecked, say so
        if is_storage(exc):
            raise _stopped(p, exc, len(problems)) from exc
        problems.append(f"{p}: verify stopped: {type(exc).__name__}: {exc}")
    finally:
        be.close()
    for r, part in parts:
        try:
            problems.extend(f"rank {r}: {line}" for line in verify(part, progress))
        except (StorageError, ReadOnlyError) as exc:
            raise _again(exc, f"{_text(exc)} ({len(problems)} problem(s) found in the other ranks' parts before "
                              "that)") from exc
    return problems


def _stopped(p: Path | StoreURL, exc: Exception, found: int) -> Exception:
    """The error verify raises when the storage fails: what failed, what was found before, what to do."""
    before = f"; {found} problem(s) found before that" if found else ""
    return _again(exc, f"{p}: verify stopped, the storage failed (not damage: nothing it could not read is "
                       f"reported){before}: {_text(exc)}")


def _text(exc: Exception) -> str:
    """An error's own message (an ``OSError`` with an errno shows it as ``[Errno n] ...: file``)."""
    return exc.strerror if isinstance(exc, OSError) and exc.errno is not None and exc.strerror else str(exc)


def _again(exc: Exception, message: str) -> Exception:
    """An error of ``exc``'s class saying ``message``, keeping its errno and file name (``EACCES``...)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return type(exc)(exc.errno, message, exc.filename)
    return type(exc)(message)


def _plain(exc: Exception) -> str:
    """An error's message without the advice to run verify (this is verify)."""
    return exc.problem if isinstance(exc, DamagedStoreError) and exc.problem else str(exc)


def _open(p: Path | StoreURL) -> tuple[Any, list[str]]:
    """The backend (or read-only view) verify reads ``p`` through, and problems found on the way."""
    if isinstance(p, Path) and backend_name_for(p, None) == "hdf5":
        from spikestore.backends.hdf5._inspect import open_for_verify

        view, problems = open_for_verify(p)
        if view is not None or problems:
            return view, problems
    return open_backend(p, backend=None, writable=False), []


def _check(be: Any, p: Path | StoreURL, problems: list[str],
           progress: Progress | None) -> list[tuple[int, Path | StoreURL]]:
    """Check the store behind ``be``; the parts of other ranks its root lists and that exist, by rank.

    Storage that fails (:func:`~spikestore._failures.is_storage`)
    is raised, never written down as a problem.
    """
    try:
        root = load_doc(be, "", "root")
    except SpikestoreError as exc:
        _unless_storage(exc)
        problems.append(_plain(exc))
        return []
    if root is None:
        problems.append(f"{p}: no spikestore root document: not a spikestore store")
        return []
    arrays: list[_Array] = []
    nodes: set[str] = set()
    for key in root["streams"]:
        nodes.update(n for n in (stream_node(key), unbounded_stream_node(key)) if n is not None)
        try:
            node, doc = load_stream_doc(be, key, root["writer"])
        except SpikestoreError as exc:
            _unless_storage(exc)
            problems.append(f"{key}: {_plain(exc)}")
            continue
        if doc is not None:
            try:
                arrays.extend(_stream_arrays(be, key, node, doc, problems))
            except Exception as exc:  # noqa: BLE001
                _unless_storage(exc)
                problems.append(f"{key}: its arrays cannot be checked ({type(exc).__name__}: {exc})")
    problems.extend(_unlisted(be, p, nodes))
    total, start = sum(a.nchunks for a in arrays), 0
    for arr in arrays:
        for c in arr.check(be, problems):
            if progress is not None:
                progress(start + c + 1, total)
        start += arr.nchunks
    if progress is not None and total and arrays[-1].checked < arrays[-1].nchunks:
        progress(total, total)  # the last array stopped early
    # (a rank that never opened its part has none: nothing to check there)
    return [(r, part_location(p, r)) for r in root.get("ranks", []) if r > 0 and be.inspect(rank_part(r)) is not None]


def _unless_storage(exc: Exception) -> None:
    """Raise ``exc`` again when it says the storage failed: verify reports damage only."""
    if is_storage(exc):
        raise exc


class _Array:
    """One segment or index array of a stream whose chunks are to be decoded."""

    def __init__(self, key: str, node: str, codec: ChunkCodec, shape: tuple[int, ...], dtype: str,
                 nchunks: int, identity: ChunkIdentity) -> None:
        self.key, self.node, self.codec, self.shape, self.dtype = key, node, codec, shape, np.dtype(dtype)
        self.identity = identity  # what the document says each chunk carries
        self.nchunks = nchunks
        self.checked = 0

    def check(self, be: Any, problems: list[str]) -> Iterator[int]:
        """Decode every chunk; yield after each. Stops early when the array cannot be read any more."""
        found = 0
        for c in range(self.nchunks):
            self.checked += 1
            try:
                read_chunk(be, self.node, c, self.codec, self.shape, self.dtype, f"stream {self.key!r}",
                           identity=self.identity)
            except DamagedStoreError as exc:
                problems.append(f"{self.key}: {_plain(exc)}")
                found += 1
            except Exception as exc:  # noqa: BLE001 - storage raised again; the file's structure failed
                _unless_storage(exc)
                problems.append(f"{self.key}: chunk {c} of {self.node} cannot be read "
                                f"({type(exc).__name__}: {exc}); its other {self.nchunks - c - 1} chunks "
                                "were not checked")
                return
            if found == MAX_ARRAY_PROBLEMS and c + 1 < self.nchunks:
                problems.append(f"{self.key}: {self.node}: {found} damaged chunks; its other "
                                f"{self.nchunks - c - 1} chunks were not checked")
                return
            yield c


def _stream_arrays(be: Any, key: str, node: str, doc: dict[str, Any], problems: list[str]) -> list[_Array]:
    """The arrays of one stream whose metadata agrees with its document; problems for the others."""
    out = []
    for seg in doc["segments"]:
        codec = codec_from_config(seg["codec"])
        record = tuple(seg["stored_shape"])
        spec = ArraySpec(record, np.dtype(seg["stored_dtype"]), seg["chunk_records"], codec)
        name = f"{node}/{seg['array']}"
        if _array_ok(be, key, name, spec, seg["count"], problems) and np.prod(record, dtype=object) != 0:
            out.append(_Array(key, name, codec, (seg["chunk_records"], *record), seg["stored_dtype"],
                              -(-seg["count"] // seg["chunk_records"]), segment_identity(key, seg)))
    rpc, count = doc["index"]["chunk_records"], doc["count"]
    for name, dtype in INDEX_ARRAYS.items():
        codec = codec_from_config(doc["index"]["codecs"][name])
        spec = ArraySpec((), np.dtype(dtype), rpc, codec)
        if _array_ok(be, key, f"{node}/{name}", spec, count, problems):
            out.append(_Array(key, f"{node}/{name}", codec, (rpc,), dtype, -(-count // rpc),
                              index_identity(doc, name)))
    return out


def _array_ok(be: Any, key: str, node: str, spec: ArraySpec, length: int, problems: list[str]) -> bool:
    """Whether array ``node`` is there and agrees with ``spec``; a problem line for each disagreement.

    An array that holds no committed record yet may be missing (a crash right
    after its stream or segment was listed).
    """
    try:
        info = be.inspect(node, spec, length)
    except Exception as exc:  # noqa: BLE001 - storage raised again; metadata that cannot be read
        _unless_storage(exc)
        problems.append(f"{key}: array {node}: its metadata cannot be read ({type(exc).__name__}: {exc})")
        return False
    if info is None:
        if length:
            problems.append(f"{key}: array {node} is missing; the document commits {length} records to it")
        return False
    problems.extend(f"{key}: array {node}: {p}" for p in info.problems)
    return not info.problems


def _unlisted(be: Any, p: Path | StoreURL, listed: set[str]) -> list[str]:
    """Stream groups the root does not list that hold committed records.

    The writer lists a stream before committing any of its records, so such a
    group means the root document lost it (a stream group with no records may be
    left by a crash, and is not reported).
    """
    problems: list[str] = []
    try:
        root = be.inspect("")
        quantities = root.members if root is not None else ()
    except Exception as exc:  # noqa: BLE001
        _unless_storage(exc)
        return [f"{p}: the root group's members cannot be listed ({type(exc).__name__}: {exc})"]
    for quantity in quantities:
        if quantity.startswith("__"):  # no quantity's: a rank's part (__rank<r>, checked on its own)
            continue
        try:
            info = be.inspect(quantity)
            groups = info.members if info is not None and info.kind == "group" else ()
        except Exception as exc:  # noqa: BLE001
            _unless_storage(exc)
            problems.append(f"{p}: group {quantity} cannot be read ({type(exc).__name__}: {exc})")
            continue
        for name in groups:
            node = f"{quantity}/{name}"
            if node in listed:
                continue
            try:
                doc = load_doc(be, node, "stream")
            except SpikestoreError as exc:
                _unless_storage(exc)
                problems.append(f"{node}: a stream group the root does not list: {_plain(exc)}")
                continue
            if doc is not None and doc["count"] > 0:
                key = join_key(doc["quantity"], doc["layer"])
                problems.append(f"{key}: group {node} holds {doc['count']} committed records, but the root "
                                "document does not list the stream (a damaged root lost it)")
    return problems
