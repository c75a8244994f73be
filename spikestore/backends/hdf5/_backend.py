"""HDF5 backend: one ``.h5`` file, pre-encoded chunks, SWMR for live readers.

One job: the storage backend protocol (:class:`~spikestore.backends.Backend`)
over one HDF5 file. The file holds the same groups, segment arrays, index
arrays and documents as a Zarr store (``docs/format.md`` §10). Documents are
fixed-length ASCII attributes named ``spikestore``; arrays are resizable
datasets chunked along axis 0 whose filter pipeline (Zstd 32015 or Blosc
32001, then Fletcher-32: the codec table's HDF5 filters, :mod:`spikestore.codecs._table`) is
exactly what the writer's codec produced, so every chunk is written with
``write_direct_chunk`` and any h5py + hdf5plugin reader decodes it.

SWMR. The writer keeps the file in SWMR write mode: chunk writes, extents
and in-place document updates are SWMR operations, so a live reader and a
killed writer both find a consistent file. HDF5 allows no new groups,
datasets or attributes in SWMR mode, yet a stream or segment can appear at
any time. Each such change therefore runs in a *structure window*: close the
file (which flushes it), reopen it without SWMR, make the change, and start
SWMR again (which flushes it). A window takes a few milliseconds and happens
only when a stream or segment is created or a document outgrows the space
reserved for it. Readers that try to open the file during one retry for up
to :data:`~spikestore.backends.hdf5.WINDOW_WAIT_S`.

The file itself is opened, shared within the process and reopened by
:mod:`spikestore.backends.hdf5._handles`; a writer killed in SWMR mode or
inside a window is recovered by :mod:`spikestore.backends.hdf5._superblock`.
Every write goes through :meth:`Handle.writing <spikestore.backends.hdf5._handles.Handle.writing>`:
its first failure (a full disk, say) is an ``OSError`` naming the cause, and
nothing more is written to the file (:mod:`spikestore.backends.hdf5._faults`).
"""

from __future__ import annotations

import contextlib
import json
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5a

from spikestore._format import ATTRS_KEY
from spikestore.backends._base import ArraySpec
from spikestore.backends.hdf5._faults import WINDOW_RESERVE, opening_error, reserve
from spikestore.backends.hdf5._handles import acquire, release
from spikestore.backends.hdf5._headers import create_node, put_document
from spikestore.backends.hdf5._links import get_node
from spikestore.errors import ArrayNameTakenError, FormatError, ReadOnlyError, StoreInUseError, StoreNotFoundError

__all__ = ["HDF5Backend"]

#: Smallest space reserved for a document; it doubles when outgrown.
_MIN_DOC_BYTES = 4096
_ATTR = ATTRS_KEY.encode()


@dataclass
class _Array:
    """An open dataset and what the backend knows of it."""

    dsid: Any  # h5py.h5d.DatasetID
    length: int  # current extent along axis 0
    chunk_records: int
    tail: tuple[int, ...]  # extent of the record axes


class HDF5Backend:
    """Backend over one HDF5 file (see the module docstring for SWMR).

    Parameters
    ----------
    path
        The ``.h5`` file; a writable backend creates it if it does not exist.
    writable
        Open for writing (at most one writable backend per path and process).
    durable
        Whether the writer makes every commit durable (``fsync``, through :meth:`sync`).

    Raises
    ------
    StoreInUseError
        If ``writable`` and this process already writes ``path``.
    """

    # Every method holds the file's lock around its h5py calls, so streams
    # drained side by side encode their chunks in parallel (the codecs release
    # the GIL) and queue only for the HDF5 writes themselves.
    concurrent_writes = True
    # Only codecs that are HDF5 filters, so plain h5py + hdf5plugin decode every chunk.
    codec_target = "hdf5"

    def __init__(self, path: Path, *, writable: bool, durable: bool = False) -> None:
        self.path = Path(path)
        self.writable = writable
        self.durable = durable
        self._arrays: dict[str, _Array] = {}
        self._generation = -1  # of the handle, when _arrays was filled
        self._doc_bytes: dict[str, int] = {}  # space reserved for each document
        self._dirty = False  # written since the last flush
        self._fresh = True  # no root document read since the view was (re)opened
        self._created = False  # this backend created the file
        self._handle = h = acquire(self.path)
        claimed = False
        try:
            with h.lock:
                if writable:
                    if h.writer:
                        raise StoreInUseError(f"{self.path} is already open for writing in this "
                                              "process; close that Store first")
                    h.writer = claimed = True
                    self._created = h.start_writer()
                elif h.state == "closed":
                    h.open_read()
        except BaseException:
            release(h, claimed)
            raise
        self._finalizer = weakref.finalize(self, release, h, claimed)

    # -- helpers ------------------------------------------------------------------------
    def _file(self) -> h5py.File:
        f = self._handle.file
        if f is None:
            if not self.path.exists():  # deleted while open: nothing to call damaged
                raise StoreNotFoundError(f"{self.path} is gone: the store was deleted while this run was open")
            raise FormatError(f"{self.path} could not be opened as an HDF5 file ({self._handle.error}); "
                              "check that it is a spikestore store and that no program other than "
                              "spikestore has it open for writing")
        return f

    def _swmr(self) -> h5py.File:
        """The file in SWMR write mode: for appends and in-place updates."""
        h = self._handle
        if h.state != "swmr":
            if h.state != "write":
                h.open_write(create=False)
            h.start_swmr()
            self._dirty = False
        return self._file()

    @contextmanager
    def _structure(self, what: str = "change its structure", extra: int = 0) -> Iterator[h5py.File]:
        """A structure window (:meth:`~spikestore.backends.hdf5._handles.Handle.window`)."""
        with self._handle.window(what, WINDOW_RESERVE + extra) as f:
            yield f
        self._dirty = False

    def _reopen(self) -> None:
        """A fresh view of a file another process writes (see :meth:`refresh`)."""
        self._handle.open_read()

    def _reading(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, once more on a fresh view if HDF5 fails: metadata this
        reader cached can disagree with what a structure window rewrote."""
        h = self._handle
        try:
            return fn(*args)
        except (OSError, RuntimeError):  # h5py's mapping of HDF5 errors
            if self.writable or h.writer or h.state != "read":
                raise
        self._reopen()
        return fn(*args)

    # -- protocol: documents ------------------------------------------------------------
    def exists(self) -> bool:
        with self._handle.lock:
            f = self._handle.file
            return f is not None and ATTRS_KEY in f.attrs

    def _attr_bytes(self, node: str) -> bytes | None:
        f = self._file()
        try:
            obj = get_node(f, node, self.path)
            if obj is None:
                return None
            value = obj.attrs[ATTRS_KEY]
        except KeyError:
            return None
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bytes):
            return value
        raise FormatError(f"{self.path}: attribute {ATTRS_KEY!r} of {node or '/'!r} is not a string")

    def refresh(self) -> None:
        """Take a fresh view of a file that another process is writing.

        HDF5 caches object headers (the root group's for as long as the file
        is open) and h5py has no ``H5Orefresh`` for groups, so the file is
        reopened. Readers in the writer's own process share its file and
        need nothing.
        """
        h = self._handle
        with h.lock:
            if not self.writable and not h.writer:
                self._reopen()
                self._fresh = True

    def read_doc(self, node: str) -> Any | None:
        h = self._handle
        with h.lock:
            fresh = False
            if not node and h.state == "read" and not self.writable and not h.writer:
                # Every root read after the first (Run.refresh) sees what was
                # committed since, whether or not refresh() was called first.
                if not self._fresh:
                    self._reopen()
                fresh, self._fresh = True, False
            raw = self._reading(self._attr_bytes, node)
            if raw is None and node and h.state == "read" and not fresh:
                self._reopen()  # a group committed after this view was opened
                raw = self._reading(self._attr_bytes, node)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise FormatError(f"{self.path}: the {ATTRS_KEY!r} attribute of {node or '/'!r} is not "
                              f"valid JSON: {exc}") from None

    def _doc_capacity(self, node: str) -> int | None:
        cap = self._doc_bytes.get(node)
        if cap is None and self._handle.file is not None:
            f = self._handle.file
            try:
                cap = (f[node] if node else f).attrs.get_id(ATTRS_KEY).dtype.itemsize
            except KeyError:
                return None
            self._doc_bytes[node] = cap
        return cap

    def write_doc(self, node: str, doc: Any) -> None:
        self._check_writable()
        data = json.dumps(doc, allow_nan=False).encode("ascii")
        with self._handle.lock:
            cap = self._doc_capacity(node)
            if cap is not None and len(data) <= cap:
                with self._handle.writing(f"write the document of {node or '/'!r}"):
                    self._write_doc_in_place(node, data, cap)
                return
            new_root = not node and cap is None  # Store() creating the store
            cap = max(_MIN_DOC_BYTES, 1 << (2 * len(data) - 1).bit_length())
            try:
                with self._structure(f"create the document of {node or '/'!r}", 2 * cap) as f:
                    put_document(f, node, np.array(data, dtype=f"S{cap}"))
            except OSError as exc:
                if not new_root or type(exc) is not OSError:  # (io_error's, not a SpikestoreError)
                    raise
                raise opening_error(exc, self.path) from exc
            self._doc_bytes[node] = cap

    def _write_doc_in_place(self, node: str, data: bytes, cap: int) -> None:
        f = self._swmr()
        self._handle.check_path()  # (a commit into a removed file would be lost silently)
        if self._dirty:
            f.flush()  # data, index and extents reach the file before the document
        attr = h5a.open(f[node].id if node else f.id, _ATTR)
        attr.write(np.array(data, dtype=f"S{cap}"))
        attr.close()
        f.flush()
        self._dirty = False

    def _check_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.path} was opened read-only")

    # -- protocol: arrays ---------------------------------------------------------------
    def create_array(self, node: str, spec: ArraySpec) -> None:
        self._check_writable()
        chunks = (spec.chunk_records, *(max(1, d) for d in spec.record_shape))
        maxshape = (None, *(None if d == 0 else d for d in spec.record_shape))
        with self._handle.lock, self._structure(f"create the array {node!r}") as f:
            if node in f:  # left by a writer that died before committing it
                try:
                    del f[node]
                except (KeyError, RuntimeError, OSError) as exc:  # its link was cut short by the kill
                    raise ArrayNameTakenError(
                        f"{self.path}: {node!r} was left by a killed writer and cannot be removed") from exc
            # Chunks hold little-endian bytes (docs/format.md): the dataset's type says so for every reader.
            create_node(f, node, lambda _depth: f.create_dataset(
                None, shape=(0, *spec.record_shape), maxshape=maxshape, chunks=chunks,
                dtype=np.dtype(spec.dtype).newbyteorder("<"),
                track_times=False, **spec.codec.hdf5_filters()))

    def _array(self, node: str) -> _Array | None:
        if self._generation != self._handle.generation:
            self._arrays.clear()
            self._generation = self._handle.generation
        arr = self._arrays.get(node)
        if arr is None:
            d = get_node(self._file(), node, self.path)
            if d is None:
                return None
            if not isinstance(d, h5py.Dataset) or d.chunks is None:
                raise FormatError(f"{self.path}: {node!r} is not a chunked dataset")
            arr = self._arrays[node] = _Array(d.id, d.shape[0], d.chunks[0], d.shape[1:])
        return arr

    def _written_array(self, node: str) -> _Array:
        arr = self._array(node)
        if arr is None:
            raise FormatError(f"{self.path}: array {node!r} is missing")
        return arr

    def set_length(self, node: str, length: int, *, exact: bool = True) -> None:
        # Extents change in place (no file to rewrite), so they are always exact.
        self._check_writable()
        with self._handle.lock, self._handle.writing(f"resize {node!r}"):
            self._swmr()
            arr = self._written_array(node)
            if length > arr.length:  # never shrink: HDF5 would drop the chunks past it
                arr.dsid.set_extent((length, *arr.tail))
                arr.length = length
                self._dirty = True

    def write_chunk(self, node: str, chunk: int, data: bytes, *, new: bool = False) -> None:
        self._check_writable()
        with self._handle.lock, self._handle.writing(f"write chunk {chunk} of {node!r}"):
            f = self._swmr()
            # The chunk and the index blocks the next flush may add, allocated first: a full disk
            # stops the writer here with nothing written (a SpaceError), so the file stays writable
            # in place and its root can still record the failure, instead of breaking HDF5's cache.
            reserve(f.id.get_vfd_handle(), len(data) + WINDOW_RESERVE)
            arr = self._written_array(node)
            row = chunk * arr.chunk_records
            if row >= arr.length:  # HDF5 takes no chunk outside the extent
                arr.dsid.set_extent((row + 1, *arr.tail))
                arr.length = row + 1
            arr.dsid.write_direct_chunk((row, *(0 for _ in arr.tail)), data)
            self._dirty = True

    def read_chunk(self, node: str, chunk: int) -> bytes | None:
        h = self._handle
        with h.lock:
            raw: bytes | None = self._reading(self._read_chunk, node, chunk, False)
            if raw is None and not self.writable:
                # An old view of a file another process writes: refresh the
                # dataset, then reopen the file, before calling it missing.
                raw = self._reading(self._read_chunk, node, chunk, h.state == "read")
                if raw is None and not h.writer:
                    self._reopen()
                    raw = self._reading(self._read_chunk, node, chunk, False)
        return raw

    def _read_chunk(self, node: str, chunk: int, refresh: bool) -> bytes | None:
        arr = self._array(node)
        if arr is None:
            return None
        if refresh:
            arr.dsid.refresh()
        if not self.writable:  # the writer (maybe in this process) grows extents
            arr.length = arr.dsid.shape[0]
        row = chunk * arr.chunk_records
        if row >= arr.length:
            return None
        offset = (row, *(0 for _ in arr.tail))
        if arr.dsid.get_chunk_info_by_coord(offset).byte_offset is None:
            return None
        mask, data = arr.dsid.read_direct_chunk(offset)
        if mask:
            raise FormatError(f"{self.path}: chunk {chunk} of {node!r} skips filters (mask {mask:#x}); "
                              "spikestore did not write it")
        return bytes(data)

    def nbytes(self, node: str) -> int:
        if not node:
            return self.path.stat().st_size
        with self._handle.lock:
            obj = get_node(self._file(), node, self.path)
            if obj is None:
                raise KeyError(f"{self.path}: nothing is stored at {node!r}")
            if isinstance(obj, h5py.Dataset):
                return int(obj.id.get_storage_size())
            total: list[int] = [sum(int(obj.attrs.get_id(k).get_storage_size()) for k in obj.attrs)]

            def visit(_name: str, item: Any) -> None:
                if isinstance(item, h5py.Dataset):
                    total[0] += int(item.id.get_storage_size())

            obj.visititems(visit)
            return total[0]

    def sync(self) -> None:
        h = self._handle
        with h.lock:
            if not self.writable or h.file is None or h.state == "read":
                return
            with h.writing("flush the file to disk"):
                h.file.flush()
                os.fsync(h.file.id.get_vfd_handle())
            self._dirty = False

    def close(self) -> None:
        self._arrays.clear()
        self._finalizer()
        if self._created and "" not in self._doc_bytes:  # Store() failed before the store existed
            with contextlib.suppress(OSError):
                self.path.unlink()

    def inspect(self, node: str, expect: ArraySpec | None = None, length: int = 0) -> Any:
        """What the file holds at ``node`` (:func:`spikestore.backends.hdf5._inspect.inspect`)."""
        from spikestore.backends.hdf5._inspect import inspect

        with self._handle.lock:
            return self._reading(lambda: inspect(self._file(), self.path, node, expect, length))
