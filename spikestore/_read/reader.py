"""The read side's one door to a store's backend: documents, sizes and decoded chunks.

A :class:`StoreReader` belongs to one :class:`~spikestore._read.run.Run`,
which hands it to its streams and their segments, so every read of the run
goes through one object: it checks that the run is still open, turns a chunk
that is missing, fails its checksum or carries another identity than its
document says (:mod:`spikestore.codecs._identity`) into a
:class:`DamagedStoreError`, and
keeps the last few decoded chunks (one LRU cache per run, shared by the
threads dask and xarray read from). A few records of a chunk read for the
first time are decoded alone where the codec allows (:meth:`StoreReader.rows`,
the cold random read). Nothing else on the read side touches the backend.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from spikestore._failures import Failure, classify, storage_error
from spikestore._format import INDEX_ARRAYS, join_key
from spikestore._read.documents import check_no_root, load_doc, load_stream_doc
from spikestore.backends import Backend, StoreURL, open_backend
from spikestore.codecs._chunk import ChecksumError, ChunkCodec, codec_from_config
from spikestore.codecs._identity import ChunkIdentity, IdentityError
from spikestore.errors import (
    DamagedStoreError,
    FormatError,
    SpikestoreError,
    StoreClosedError,
    StoreNotFoundError,
)

__all__ = ["CACHE_CHUNKS", "SEEN_CHUNKS", "ChunkIdentity", "StoreReader", "index_identity", "read_chunk",
           "read_index_tail", "segment_identity"]

#: Decoded chunks a run keeps (least recently used first out).
CACHE_CHUNKS = 8
#: Chunks a run remembers having read in part (:meth:`StoreReader.rows`): a second read decodes them whole.
SEEN_CHUNKS = 4096


def segment_identity(key: str, seg: dict[str, Any]) -> ChunkIdentity:
    """What the chunks of segment entry ``seg`` of stream ``key`` must carry (its ``count`` included)."""
    return ChunkIdentity.for_segment(key, seg)


def index_identity(doc: dict[str, Any], name: str) -> ChunkIdentity:
    """What the chunks of index array ``name`` of the stream with document ``doc`` must carry."""
    return ChunkIdentity.for_index(join_key(doc["quantity"], doc["layer"]), doc, name, INDEX_ARRAYS[name])


def read_chunk(backend: Backend, node: str, chunk: int, codec: ChunkCodec,
               shape: tuple[int, ...], dtype: np.dtype, where: str, *,
               identity: ChunkIdentity | None = None) -> np.ndarray:
    """Chunk ``chunk`` of array ``node``, decoded to ``shape`` and ``dtype``.

    ``identity`` is what the array's document entry says its chunks carry
    (:func:`segment_identity`, :func:`index_identity`): the chunk must carry
    exactly that, and must have held every row of it the document commits.
    Without it, a trailing identity frame is skipped unchecked.

    Raises
    ------
    DamagedStoreError
        If the chunk is missing (inside the committed range a missing chunk
        is damage, never a fill value), fails its checksum, decodes to
        another size, or carries another identity. ``where`` says which
        stream the message is about.
    FormatError
        For a chunk or document of a newer version than this spikestore reads.
    StorageError, ReadOnlyError, StoreNotFoundError
        When the storage fails rather than the chunk (:func:`_fetch`): not damage.
    """
    raw = _fetch(backend, node, chunk, where)
    with _decoding(backend, node, chunk, where):
        arr = codec.decode(raw, shape, dtype, identity=identity, chunk=chunk)
    return arr


def _fetch(backend: Backend, node: str, chunk: int, where: str) -> bytes:
    """The stored bytes of chunk ``chunk`` of ``node``; a missing or unreadable chunk is damage.

    Storage that fails is not damage, and is raised as what it is: an
    object store that cannot be reached (:class:`StorageError`), access
    denied (:class:`ReadOnlyError`, also for a local file this user may not
    read), a store that is gone altogether (:class:`StoreNotFoundError`).
    """
    try:
        raw = backend.read_chunk(node, chunk)
    except Exception as exc:
        failure = classify(exc)
        if isinstance(exc, SpikestoreError) and not isinstance(exc, FormatError):
            raise  # storage that failed, or a closed run: not damage, and the error says so already
        if failure.storage_failed:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise storage_error(exc, f"{backend.path}: {where}: chunk {chunk} of {node} cannot be read ({reason}); "
                                "this is not damage: the store may be intact", writing=False) from exc
        if failure in (Failure.INTERRUPT, Failure.OTHER):
            raise  # a bug, not the chunk
        if isinstance(exc, DamagedStoreError) or failure is Failure.MISSING:
            _unless_gone(backend, node, chunk, where, exc)  # (the array's metadata, say, is not there)
            if isinstance(exc, DamagedStoreError):
                raise
        # h5py reports an unreadable chunk index or object header as OSError, RuntimeError,
        # KeyError or ValueError; zarr stores a folder where a chunk should be.
        raise _unreadable(backend, node, chunk, where, exc) from exc
    if raw is None:
        _unless_gone(backend, node, chunk, where, None)
        raise DamagedStoreError(
            f"{backend.path}: {where}: chunk {chunk} of {node} is missing inside the committed "
            "range; the store is damaged (a file was deleted or never reached the disk)")
    return raw


def _unless_gone(backend: Backend, node: str, chunk: int, where: str, exc: BaseException | None) -> None:
    """Raise :class:`StoreNotFoundError` when the whole store went away, not just what chunk ``chunk`` needs.

    A store deleted (or a bucket removed) while a run reads it lost its root
    document too: that is no damage to report, and ``verify`` would find no
    store at all.
    """
    try:
        present = backend.exists()
        if not present:
            check_no_root(backend)  # groups still there without the root: damage, named by the root it lost
    except Exception as err:
        failure = classify(err)
        if isinstance(err, DamagedStoreError) or failure.storage_failed or failure in (
                Failure.MISSING, Failure.INTERRUPT):
            raise
        return  # the root cannot be read either: report what was asked about
    if not present:
        raise StoreNotFoundError(
            f"{backend.path}: {where}: chunk {chunk} of {node} cannot be read, and the store's root document "
            "is gone too: the store was deleted (or its bucket removed) while this run was open") from exc


def _unreadable(backend: Backend, node: str, chunk: int, where: str, exc: BaseException) -> DamagedStoreError:
    """The damage error for a chunk the backend could not read out of a store it did reach."""
    return DamagedStoreError(f"{backend.path}: {where}: chunk {chunk} of {node} cannot be read "
                             f"({type(exc).__name__}: {exc}); the store is damaged or unreadable")


@contextmanager
def _decoding(backend: Backend, node: str, chunk: int, where: str) -> Iterator[None]:
    """Turn what a codec raises for chunk ``chunk`` of ``node`` into errors that name it."""
    try:
        yield
    except IdentityError as exc:
        raise DamagedStoreError(
            f"{backend.path}: {where}: chunk {chunk} of {node} does not belong where it is: {exc}; "
            "the store is damaged") from None
    except ChecksumError as exc:
        raise DamagedStoreError(
            f"{backend.path}: {where}: chunk {chunk} of {node} is corrupt ({exc}); "
            "the file was altered after it was written") from None
    except FormatError as exc:
        if isinstance(exc, DamagedStoreError):
            raise
        raise FormatError(f"{backend.path}: {where}: chunk {chunk} of {node}: {exc}") from None


def _index_chunks(backend: Backend, node: str, doc: dict[str, Any], name: str, chunks: range,
                  where: str) -> list[np.ndarray]:
    if not chunks:  # (a stream without a document yet names no codecs)
        return []
    rpc = doc["index"]["chunk_records"]
    codec, identity = codec_from_config(doc["index"]["codecs"][name]), index_identity(doc, name)
    return [read_chunk(backend, f"{node}/{name}", c, codec, (rpc,), np.dtype(INDEX_ARRAYS[name]), where,
                       identity=identity) for c in chunks]


def read_index_tail(backend: Backend, node: str, doc: dict[str, Any]) -> int:
    """The step of a stream's last committed record (-1 when empty).

    The writer calls this when it reopens a store for appending, so it takes
    a backend rather than a :class:`StoreReader`.
    """
    n = doc["count"]
    if n == 0:
        return -1
    rpc = doc["index"]["chunk_records"]
    last = (n - 1) // rpc
    return int(_index_chunks(backend, node, doc, "step", range(last, last + 1), "index")[0][(n - 1) % rpc])


def _reopen(path: Path | StoreURL, backend_name: str | None) -> StoreReader:
    return StoreReader(open_backend(path, backend=backend_name, writable=False), path, backend_name)


class StoreReader:
    """Reads one opened store for a run: documents, sizes, index arrays and cached chunks.

    Parameters
    ----------
    backend
        The opened backend; this object closes it in :meth:`close`.
    path, backend_name
        Where the store is and which backend reads it, to reopen it when
        pickled into another process (dask's process and distributed
        schedulers pickle the segments their tasks read).
    cache_chunks
        Decoded chunks kept.
    """

    def __init__(self, backend: Backend, path: Path | StoreURL, backend_name: str | None = None,
                 cache_chunks: int = CACHE_CHUNKS) -> None:
        self.path = path
        self.backend_name = backend_name
        self._backend = backend
        self._cache_chunks = cache_chunks
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()  # chunks read in part once
        self._lock = threading.Lock()  # dask and xarray read chunks from several threads
        self._closed = False
        self._writer: dict[str, Any] | None = None  # the writer status of the root document read last

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.path, self.backend_name))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def check(self) -> None:
        """Raise :class:`StoreClosedError` once the run is closed."""
        if self._closed:
            raise StoreClosedError(f"run {self.path} is closed; open it again with spikestore.open")

    def refresh(self) -> None:
        """See what was committed since opening (HDF5 refreshes its SWMR view).

        The cache stays: clear it (:meth:`clear`) once the documents that
        describe the new chunks have been read again.
        """
        self.check()
        self._backend.refresh()

    def clear(self) -> None:
        """Drop every cached chunk, and forget which chunks were read in part."""
        with self._lock:
            self._cache.clear()
            self._seen.clear()

    def root_doc(self) -> dict[str, Any] | None:
        """The root document, read and checked (:func:`~spikestore._read.documents.load_doc`), or ``None``."""
        self.check()
        doc = load_doc(self._backend, "", "root")
        self._writer = None if doc is None else doc["writer"]
        return doc

    def stream_doc(self, key: str) -> tuple[str, dict[str, Any] | None]:
        """Where stream ``key``'s group is, and its checked document (``None``: not committed yet).

        Judged against the writer status of the root document read last
        (:meth:`root_doc`): a listed stream without a document whose writer is
        done is damage (:func:`~spikestore._read.documents.load_stream_doc`).
        """
        self.check()
        return load_stream_doc(self._backend, key, self._writer)

    def nbytes(self, node: str) -> int:
        """Bytes on disk under ``node`` (``""``: the whole store)."""
        self.check()
        return int(self._backend.nbytes(node))

    def index(self, node: str, doc: dict[str, Any], name: str, where: str, start: int = 0,
              stop: int | None = None) -> np.ndarray:
        """Entries ``start:stop`` (default: all) of the ``name`` index array (``step``, ``call``, ``time``)
        of the stream at ``node``, reading only the index chunks that hold them.

        ``doc`` is the stream's document (its committed ``count`` bounds the
        array). Not cached here: the stream keeps the arrays it read.
        """
        self.check()
        n, rpc = doc["count"], doc["index"]["chunk_records"]
        start, stop, _ = slice(start, stop).indices(n)
        first = start // rpc
        chunks = range(first, -(-stop // rpc)) if stop > start else range(0)
        parts = _index_chunks(self._backend, node, doc, name, chunks, where)
        whole = np.concatenate(parts) if parts else np.zeros(0, np.dtype(INDEX_ARRAYS[name]))
        return whole[start - first * rpc:stop - first * rpc]

    def chunk(self, node: str, number: int, codec: ChunkCodec, shape: tuple[int, ...],
              dtype: np.dtype, where: str, *, identity: ChunkIdentity | None = None) -> np.ndarray:
        """Decoded chunk ``number`` of array ``node``; read-only, shared through the cache.

        ``identity`` as in :func:`read_chunk`.
        """
        self.check()
        key = (node, number)
        arr = self._cached(key)
        if arr is not None:
            return arr
        arr = read_chunk(self._backend, node, number, codec, shape, dtype, where, identity=identity)
        self._keep(key, arr)
        return arr

    def rows(self, node: str, number: int, lo: int, hi: int, codec: ChunkCodec, shape: tuple[int, ...],
             dtype: np.dtype, where: str, *, identity: ChunkIdentity | None = None) -> np.ndarray:
        """Rows ``lo:hi`` of decoded chunk ``number`` of array ``node``; read-only.

        The cold random read: a chunk that is neither cached nor read before
        is decoded only as far as these rows need where its codec allows
        (:meth:`~spikestore.codecs._chunk.ChunkCodec.decode_rows`: gap-coded
        spike chunks, ~10x cheaper for one record), and remembered. A chunk
        read before, or a request for more than a quarter of one, is decoded
        whole and cached as by :meth:`chunk`, so reading on in the same chunk
        (a loop over records, a second look) costs one whole decode per chunk.
        Checksums and identities are checked either way.
        """
        self.check()
        key = (node, number)
        arr = self._cached(key)
        if arr is not None:
            return arr[lo:hi]
        with self._lock:
            seen = key in self._seen
        if seen or 4 * (hi - lo) > shape[0]:
            return self.chunk(node, number, codec, shape, dtype, where, identity=identity)[lo:hi]
        raw = _fetch(self._backend, node, number, where)
        with _decoding(self._backend, node, number, where):
            got, whole = codec.decode_rows(raw, shape, dtype, lo, hi, identity=identity, chunk=number)
        if whole:  # (the codec decoded it whole anyway: keep it)
            self._keep(key, got)
            return got[lo:hi]
        got.setflags(write=False)
        with self._lock:
            self._seen[key] = None
            self._seen.move_to_end(key)
            while len(self._seen) > SEEN_CHUNKS:
                self._seen.popitem(last=False)
        return got

    def _cached(self, key: tuple[str, int]) -> np.ndarray | None:
        """The whole decoded chunk ``key`` if cached (now the most recently used), else None."""
        with self._lock:
            arr = self._cache.get(key)
            if arr is not None:
                self._cache.move_to_end(key)
            return arr

    def _keep(self, key: tuple[str, int], arr: np.ndarray) -> None:
        """Cache a whole decoded chunk (read-only from now: readers copy what they hand out)."""
        arr.setflags(write=False)
        with self._lock:
            self._cache[key] = arr
            self._cache.move_to_end(key)
            self._seen.pop(key, None)
            while len(self._cache) > self._cache_chunks:
                self._cache.popitem(last=False)

    def close(self) -> None:
        """Close the backend; later reads raise :class:`StoreClosedError`."""
        if not self._closed:
            self._closed = True
            self.clear()
            self._backend.close()
