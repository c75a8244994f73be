"""The protocol every storage backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spikestore.codecs._chunk import ChunkCodec

if TYPE_CHECKING:
    from spikestore.backends._location import StoreURL

__all__ = ["ArraySpec", "Backend", "NodeInfo"]


@dataclass(frozen=True)
class ArraySpec:
    """An array chunked along axis 0 only: ``chunk_records`` records per chunk.

    ``record_shape`` is the shape of one stored record (packed, for bits).
    """

    record_shape: tuple[int, ...]
    dtype: np.dtype
    chunk_records: int
    codec: ChunkCodec


@dataclass(frozen=True)
class NodeInfo:
    """What a backend finds at a node, from the store's own metadata (:meth:`Backend.inspect`).

    Attributes
    ----------
    kind
        ``"group"`` or ``"array"``.
    meta
        Whether the node's own metadata exists: its ``zarr.json`` (Zarr; a folder
        without one is a group with ``meta`` false), its object header (HDF5: always).
    doc
        Whether a document is stored there (Zarr: the ``zarr.json`` holds one; HDF5:
        the group has the attribute), readable or not.
    members
        For a group, the names of the groups and arrays inside it (what is left of an
        interrupted write excluded: Zarr's ``.partial`` files are not folders).
    problems
        For an array inspected against an :class:`ArraySpec`, how its metadata
        disagrees with it (empty when it agrees), one phrase each.
    """

    kind: str
    meta: bool = True
    doc: bool = False
    members: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


class Backend(Protocol):
    """Raw access to one store: JSON documents, arrays, pre-encoded chunks.

    Paths are ``/``-separated and relative to the root (``""`` is the root).
    A backend never interprets documents; the writer and reader do. What
    the storage raises is raised as it is (or as a
    :class:`~spikestore.errors.SpikestoreError` that names the storage's
    failure); :func:`spikestore._failures.classify` tells callers what it means.

    The capabilities below are attributes every backend sets; callers read
    them, and never probe for methods.
    """

    @property
    def path(self) -> Path | StoreURL:
        """Where the store is."""

    writable: bool
    #: Whether each commit is made durable (``fsync`` through :meth:`sync`):
    #: the writer then commits one stream at a time, so that a sync never
    #: covers another stream's files half-way through its commit. False where
    #: every acknowledged write is durable already (object storage).
    durable: bool
    #: Whether the writer may call the write methods of different arrays
    #: from several threads at once (it does so only while a flush or close
    #: waits).
    concurrent_writes: bool
    #: Which codecs the backend stores (a target of :mod:`spikestore.codecs._table`):
    #: ``"zarr"`` (any with a zarr v3 codec) or ``"hdf5"`` (HDF5 filters only), so
    #: that plain zarr or h5py readers decode every chunk. The writer picks codecs
    #: for it (:func:`~spikestore.codecs._chunk.codec_for`); backends never do.
    codec_target: str

    def refresh(self) -> None:
        """Let a reader see what was committed since it opened the store (nothing to do where reads are fresh)."""

    def exists(self) -> bool:
        """Whether a store (any root document) exists at :attr:`path`."""

    def read_doc(self, node: str) -> Any | None:
        """The spikestore document of a group, or ``None`` if there is none.

        Metadata that cannot be parsed raises :class:`~spikestore.errors.FormatError`
        saying what is wrong with it; the reader names the file and calls it damage.
        """

    def write_doc(self, node: str, doc: Any) -> None:
        """Create the group if needed and atomically replace its document."""

    def inspect(self, node: str, expect: ArraySpec | None = None, length: int = 0) -> NodeInfo | None:
        """What is at ``node`` (``None``: nothing), read from the store's own metadata.

        With ``expect``, ``node`` should be an array of that spec holding at
        least ``length`` records: :attr:`NodeInfo.problems` says how its
        metadata disagrees (shape, chunks, dtype, codecs), and is the only
        way a disagreement is reported. Raises whatever the storage raises
        for metadata it cannot read.
        """

    def create_array(self, node: str, spec: ArraySpec) -> None:
        """Create an empty (length 0) array, replacing any old one at ``node``."""

    def set_length(self, node: str, length: int, *, exact: bool = True) -> None:
        """Make an array's length along axis 0 at least ``length`` (never shrinks rows that hold data).

        With ``exact=False`` the backend may round the length up (the
        format lets array lengths run ahead of the committed count), so
        that most commits need not rewrite the array's metadata.
        """

    def write_chunk(self, node: str, chunk: int, data: bytes, *, new: bool = False) -> None:
        """Atomically store the encoded bytes of chunk number ``chunk``.

        ``new=True`` promises that the chunk holds no committed record and
        that this writer has not written it before, so no reader can be
        looking at it: a backend may then write it in place (a torn file
        left by a crash lies past every count and is never read).
        """

    def read_chunk(self, node: str, chunk: int) -> bytes | None:
        """The encoded bytes of a chunk, or ``None`` if it was never written."""

    def nbytes(self, node: str) -> int:
        """Bytes on disk of everything under ``node`` (documents included)."""

    def sync(self) -> None:
        """Make everything written so far durable (fsync), if supported."""

    def close(self) -> None:
        """Release files and handles; idempotent."""
