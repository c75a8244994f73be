"""HDF5 backend: one ``.h5`` file, pre-encoded chunks, SWMR for live readers.

The file holds the same groups, segment arrays, index arrays and documents as
a Zarr store (``docs/format.md`` §10). Documents are fixed-length ASCII
attributes named ``spikestore``; arrays are resizable datasets chunked along
axis 0 whose filter pipeline (Zstd 32015 or Blosc 32001, then Fletcher-32)
is exactly what the writer's codec produced, so every chunk is written with
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
to :data:`WINDOW_WAIT_S`.

One process, one file. HDF5 shares an open file between all openings in a
process and refuses openings with different flags (a SWMR reader next to the
writer), so every backend of a path in this process goes through one
:class:`_Handle`; readers in the writer's process use the writer's file.

Recovery. A writer killed in SWMR mode leaves the superblock's "open for
SWMR write" flags set; SWMR readers open such a file as it is. Appending
(``Store(mode="a")``, which has already checked that the old writer is
dead) clears the flags the way ``h5clear`` does. A writer killed inside a
window leaves "open for write" set, which even SWMR readers refuse; readers
then read through a view of the file with the flags cleared (a reader never
writes to the file).
"""

from __future__ import annotations

import ctypes
import functools
import io
import json
import os
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5a

from spikestore.codecs._chunk import ChunkCodec, codec_for, index_codec
from spikestore.errors import FormatError, ReadOnlyError, StoreInUseError
from spikestore._format import ATTRS_KEY
from spikestore.backends._base import ArrayNameTaken, ArraySpec

__all__ = ["WINDOW_WAIT_S", "HDF5Backend", "clear_writer_flags"]

#: Oldest HDF5 file format that SWMR needs (HDF5 1.10); also the newest
#: used, so any HDF5 >= 1.10 reads the file.
_LIBVER = ("v110", "v110")
#: Smallest space reserved for a document; it doubles when outgrown.
_MIN_DOC_BYTES = 4096
#: How long a reader waits for the writer to leave a structure window before
#: it treats the writer as dead and reads through a recovered view.
WINDOW_WAIT_S = 2.0
_ATTR = ATTRS_KEY.encode()

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_FLAG_WRITE = 0x01
_FLAG_SWMR = 0x04
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


# -- superblock recovery ---------------------------------------------------------
def _lookup3(data: bytes) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` (initval 0): HDF5's metadata checksum."""
    m = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & m

    n = len(data)
    a = b = c = (0xDEADBEEF + n) & m
    i = 0
    while n > 12:
        x, y, z = struct.unpack_from("<3I", data, i)
        a, b, c = (a + x) & m, (b + y) & m, (c + z) & m
        a = (a - c) & m; a ^= rot(c, 4); c = (c + b) & m  # lookup3's mix()
        b = (b - a) & m; b ^= rot(a, 6); a = (a + c) & m
        c = (c - b) & m; c ^= rot(b, 8); b = (b + a) & m
        a = (a - c) & m; a ^= rot(c, 16); c = (c + b) & m
        b = (b - a) & m; b ^= rot(a, 19); a = (a + c) & m
        c = (c - b) & m; c ^= rot(b, 4); b = (b + a) & m
        n -= 12
        i += 12
    if n == 0:
        return c
    x, y, z = struct.unpack("<3I", data[i:] + bytes(12 - n))
    a, b, c = (a + x) & m, (b + y) & m, (c + z) & m
    c ^= b; c = (c - rot(b, 14)) & m  # lookup3's final()
    a ^= c; a = (a - rot(c, 11)) & m
    b ^= a; b = (b - rot(a, 25)) & m
    c ^= b; c = (c - rot(b, 16)) & m
    a ^= c; a = (a - rot(c, 4)) & m
    b ^= a; b = (b - rot(a, 14)) & m
    c ^= b; c = (c - rot(b, 24)) & m
    return c


@dataclass(frozen=True)
class _Superblock:
    """The head of a version 2/3 superblock (the only ones SWMR files have)."""

    head: bytes  # up to and including the checksum
    flags: int
    eoa: int  # end-of-allocation address (absolute)

    @classmethod
    def read(cls, path: Path) -> _Superblock | None:
        try:
            with open(path, "rb") as fh:
                head = fh.read(12 + 4 * 8 + 4)
        except OSError:
            return None
        if len(head) < 12 or head[:8] != _SIGNATURE or head[8] not in (2, 3):
            return None
        size = head[9]
        end = 12 + 4 * size
        if size != 8 or len(head) < end + 4:
            return None
        base, _ext, eoa, _root = struct.unpack_from("<4Q", head, 12)
        if struct.unpack_from("<I", head, end)[0] != _lookup3(head[:end]):
            raise FormatError(f"{path}: the HDF5 superblock fails its checksum; the file is damaged")
        return cls(head[: end + 4], head[11], base + eoa)

    def cleared(self) -> bytes:
        """The head with the status flags cleared and the checksum redone."""
        head = bytearray(self.head)
        head[11] = 0
        end = len(head) - 4
        head[end:] = struct.pack("<I", _lookup3(bytes(head[:end])))
        return bytes(head)


def clear_writer_flags(path: str | os.PathLike[str]) -> bool:
    """Clear the "open for write" flags a killed writer left, like ``h5clear -s``.

    Also extends a file that ends before HDF5's recorded end of allocation
    (space allocated just before the kill and never written) with zeros,
    as ``h5clear --increment`` would, so a read-write open accepts it.
    Only call this when no process has the file open for writing.

    Returns
    -------
    bool
        Whether anything was changed.
    """
    sb = _Superblock.read(Path(path))
    if sb is None:
        return False
    changed = False
    with open(path, "r+b") as fh:
        if sb.flags:
            fh.write(sb.cleared())
            changed = True
        if os.fstat(fh.fileno()).st_size < sb.eoa:
            fh.truncate(sb.eoa)
            changed = True
    return changed


class _RecoveredView(io.RawIOBase):
    """A read-only view of an HDF5 file as :func:`clear_writer_flags` would leave it.

    Lets a reader open a file whose writer died inside a structure window
    without writing to a file that is not its own.
    """

    def __init__(self, path: Path, sb: _Superblock) -> None:
        super().__init__()
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._head = sb.cleared()
        self._size = max(os.fstat(self._fh.fileno()).st_size, sb.eoa)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        data = os.pread(self._fh.fileno(), n, self._pos)
        view[: len(data)] = data
        view[len(data):n] = bytes(n - len(data))  # allocated, never written: zeros
        if self._pos < len(self._head):
            k = min(n, len(self._head) - self._pos)
            view[:k] = self._head[self._pos:self._pos + k]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


# -- codecs as HDF5 filters --------------------------------------------------------
def _filters(codec: ChunkCodec) -> dict[str, Any]:
    """``create_dataset`` keywords whose filter pipeline decodes ``codec``'s chunks."""
    import hdf5plugin

    cfg = codec.config
    if codec.checksum != "fletcher32":
        raise FormatError(f"codec {cfg} ends in a {codec.checksum} checksum, which HDF5 cannot check; "
                          "HDF5 stores use HDF5Backend.codec_for")
    if cfg["id"] == "zstd":
        pipeline: dict[str, Any] = dict(hdf5plugin.Zstd(clevel=int(cfg["level"])))
    elif cfg["id"] == "blosc":
        pipeline = dict(hdf5plugin.Blosc(cname=cfg["cname"], clevel=int(cfg["clevel"]),
                                         shuffle=_SHUFFLE[cfg["shuffle"]]))
    else:
        raise FormatError(f"chunk codec {cfg['id']!r} is no HDF5 filter; HDF5 stores use "
                          "HDF5Backend.codec_for")
    return pipeline | {"fletcher32": True}


def _hdf5_codec(codec: ChunkCodec) -> ChunkCodec:
    """``codec`` as an HDF5 filter pipeline: the spike codec becomes zstd (no
    HDF5 filter implements it), and the checksum becomes Fletcher-32."""
    cfg = dict(codec.config)
    if cfg["id"] == "spikestore.spikes":
        cfg = {"id": "zstd", "level": cfg["level"]}
    return ChunkCodec(cfg | {"checksum": "fletcher32"})


# -- SWMR readers that fail instead of hanging ---------------------------------------------
#: Metadata read attempts of a SWMR reader. HDF5 retries a read whose checksum
#: fails (the writer may be halfway through writing it), sleeping twice as long
#: each time; its default of 100 attempts turns a lasting mismatch (metadata
#: this reader cached before a structure window) into a wait of hours. 30
#: attempts wait about a second in all, then fail, and the reader reopens.
_READ_ATTEMPTS = 30


@functools.cache
def _hdf5_library() -> ctypes.CDLL | None:
    """The HDF5 library that h5py itself loaded (h5py does not wrap
    H5Pset_metadata_read_attempts), or ``None`` where it cannot be found."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "/libhdf5" in line and "_hl" not in line}
    except OSError:
        paths = set()
    here = Path(h5py.__file__).parent
    paths.update(str(p) for p in (*here.parent.glob("h5py.libs/libhdf5-*"), *here.glob(".dylibs/libhdf5*"))
                 if "_hl" not in p.name)
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
            # Only the copy h5py uses knows h5py's property lists.
            if lib.H5Pset_metadata_read_attempts(ctypes.c_int64(fapl.id), ctypes.c_uint(2)) >= 0:
                return lib
        except (OSError, AttributeError):
            continue
    return None


def _swmr_read_fapl() -> Any:
    """File access properties of a SWMR reader: bounded metadata read attempts."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    lib = _hdf5_library()
    if lib is not None:
        lib.H5Pset_metadata_read_attempts(ctypes.c_int64(fapl.id), ctypes.c_uint(_READ_ATTEMPTS))
    return fapl


# -- one open file per path and process ---------------------------------------------
class _Handle:
    """The h5py file this process keeps open for one path.

    HDF5 shares one open file between every opening in a process and
    refuses openings whose flags differ (SWMR read next to read-write, say),
    so all readers and the writer of a path in one process go through one
    handle, serialised by its lock. Readers in the writer's process then
    see the writer's own metadata cache, which is always current.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.path = Path(key)
        self.lock = threading.RLock()
        self.file: h5py.File | None = None
        self.view: _RecoveredView | None = None
        self.state = "closed"  # "read", "write" (read-write, no SWMR) or "swmr"
        self.generation = 0  # bumped at every (re)open: cached h5py objects die with it
        self.users = 0
        self.writer = False
        self.error: OSError | None = None  # why the last open_read() found no file

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.view is not None:
            self.view.close()
            self.view = None
        self.state = "closed"

    def open_read(self) -> None:
        """(Re)open read-only; another process may be writing (SWMR) or have died.

        Leaves :attr:`file` ``None`` (and the reason in :attr:`error`) when the
        path holds no HDF5 file that opens.
        """
        self.close()
        self.generation += 1
        self.error = None
        deadline = time.monotonic() + WINDOW_WAIT_S
        while True:
            try:
                fid = h5py.h5f.open(os.fsencode(self.path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ,
                                    fapl=_swmr_read_fapl())
                self.file = h5py.File(fid)
                self.state = "read"
                return
            except OSError as exc:
                self.error = exc
            sb = _Superblock.read(self.path)
            if sb is None:  # not an HDF5 file with a SWMR superblock
                self._open_plain()
                return
            if _open_elsewhere_here(self.path) and self._open_plain():
                # This process has the file open without SWMR (plain h5py), and
                # HDF5 refuses a SWMR reader next to it but shares that opening.
                return
            if time.monotonic() > deadline:
                if sb.flags & _FLAG_WRITE and not sb.flags & _FLAG_SWMR:
                    # Still "open for write, not SWMR": the writer died in a window.
                    self.view = _RecoveredView(self.path, sb)
                    self.file = h5py.File(self.view, "r")
                    self.state = "read"
                return
            time.sleep(0.005)  # a writer between SWMR sessions (a structure window)

    def _open_plain(self) -> bool:
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            self.error = exc
            return False
        self.state = "read"
        return True

    def open_write(self, *, create: bool) -> None:
        """Open read-write without SWMR (creating the file, or resuming it)."""
        resuming = not create and self.state in ("closed", "read")
        self.close()
        self.generation += 1
        if create:
            self.file = h5py.File(self.path, "w-", libver=_LIBVER, locking=False)
        else:
            if resuming:
                # Store(mode="a") has checked that the last writer is gone, so
                # flags it left are stale.
                clear_writer_flags(self.path)
            self.file = h5py.File(self.path, "r+", libver=_LIBVER, locking=False)
        self.state = "write"

    def start_swmr(self) -> None:
        assert self.file is not None and self.state == "write"
        self.file.swmr_mode = True  # flushes everything first
        self.state = "swmr"


def _open_elsewhere_here(path: Path) -> bool:
    """Whether this process has ``path`` open through some other h5py file."""
    for fid in h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE):
        try:
            if os.path.samefile(os.fsdecode(fid.name), path):
                return True
        except OSError:
            continue
    return False


_HANDLES: dict[str, _Handle] = {}
_HANDLES_LOCK = threading.RLock()


def _acquire(path: Path) -> _Handle:
    key = os.path.abspath(path)
    with _HANDLES_LOCK:
        handle = _HANDLES.get(key)
        if handle is None:
            handle = _HANDLES[key] = _Handle(key)
        handle.users += 1
        return handle


def _release(handle: _Handle, writer: bool) -> None:
    # Lock order everywhere: a handle's lock, then _HANDLES_LOCK (a finaliser
    # may run this from inside a backend call that holds the handle's lock).
    with handle.lock:
        with _HANDLES_LOCK:
            handle.users -= 1
            users = handle.users
            if not users and _HANDLES.get(handle.key) is handle:
                del _HANDLES[handle.key]
        if writer:
            handle.writer = False
            handle.close()  # a clean close clears the superblock's writer flags
            if users:
                handle.open_read()
        elif not users:
            handle.close()


@dataclass
class _Array:
    """An open dataset and what the backend knows of it."""

    dsid: Any  # h5py.h5d.DatasetID
    length: int  # current extent along axis 0
    chunk_records: int
    tail: tuple[int, ...]  # extent of the record axes


class HDF5Backend:
    """Backend over one HDF5 file (see the module docstring for SWMR).

    Attributes
    ----------
    h5py_seconds
        Wall time spent inside h5py calls by this backend (holding h5py's
        global lock), structure windows included.
    chunks_written, windows, window_seconds
        Chunks written, structure windows opened, and the time they took.
    """

    # Every method holds the file's lock around its h5py calls, so streams
    # drained side by side encode their chunks in parallel (the codecs release
    # the GIL) and queue only for the HDF5 writes themselves.
    concurrent_writes = True

    def __init__(self, path: Path, *, writable: bool, durable: bool = False) -> None:
        self.path = Path(path)
        self.writable = writable
        self.durable = durable
        self.h5py_seconds = 0.0
        self.chunks_written = 0
        self.windows = 0
        self.window_seconds = 0.0
        self._arrays: dict[str, _Array] = {}
        self._generation = -1  # of the handle, when _arrays was filled
        self._doc_bytes: dict[str, int] = {}  # space reserved for each document
        self._dirty = False  # written since the last flush
        self._fresh = True  # no root document read since the view was (re)opened
        self._handle = h = _acquire(self.path)
        claimed = False
        try:
            with h.lock:
                if writable:
                    if h.writer:
                        raise StoreInUseError(f"{self.path} is already open for writing in this "
                                              "process; close that Store first")
                    h.writer = claimed = True
                    if not self.path.exists():
                        h.open_write(create=True)  # SWMR starts with the root document
                    elif h.state == "closed":
                        h.open_read()  # Store(mode="a") reads before it writes
                elif h.state == "closed":
                    h.open_read()
        except BaseException:
            _release(h, claimed)
            raise
        self._finalizer = weakref.finalize(self, _release, h, claimed)

    # -- helpers ------------------------------------------------------------------------
    @contextmanager
    def _timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.h5py_seconds += time.perf_counter() - t0

    def _file(self) -> h5py.File:
        f = self._handle.file
        if f is None:
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
    def _structure(self) -> Iterator[h5py.File]:
        """A structure window: the file out of SWMR mode, back in SWMR after."""
        h = self._handle
        t0 = time.perf_counter()
        if h.state != "write":
            h.open_write(create=False)  # closing the SWMR file flushes it
        try:
            yield self._file()
        finally:
            h.start_swmr()
            self._dirty = False
            self.windows += 1
            self.window_seconds += time.perf_counter() - t0

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

    # -- protocol: codecs -----------------------------------------------------------
    def codec_for(self, encoding: str, stored_dtype: np.dtype, level: int | None = None,
                  record_bytes: int | None = None, row_bits: int | None = None) -> ChunkCodec:
        # No HDF5 filter implements the spike codec's row-aware gap coding.
        return _hdf5_codec(codec_for(encoding, stored_dtype, level, record_bytes))

    def index_codec(self, dtype: np.dtype) -> ChunkCodec:
        return _hdf5_codec(index_codec(dtype))

    # -- protocol: documents ------------------------------------------------------------
    def exists(self) -> bool:
        with self._handle.lock, self._timed():
            f = self._handle.file
            return f is not None and ATTRS_KEY in f.attrs

    def _attr_bytes(self, node: str) -> bytes | None:
        f = self._file()
        try:
            value = (f[node] if node else f).attrs[ATTRS_KEY]
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
        with h.lock, self._timed():
            if not self.writable and not h.writer:
                self._reopen()
                self._fresh = True

    def read_doc(self, node: str) -> Any | None:
        h = self._handle
        with h.lock, self._timed():
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
        with self._handle.lock, self._timed():
            cap = self._doc_capacity(node)
            if cap is not None and len(data) <= cap:
                f = self._swmr()
                if self._dirty:
                    f.flush()  # data, index and extents reach the file before the document
                attr = h5a.open(f[node].id if node else f.id, _ATTR)
                attr.write(np.array(data, dtype=f"S{cap}"))
                attr.close()
                f.flush()
                self._dirty = False
                return
            cap = max(_MIN_DOC_BYTES, 1 << (2 * len(data) - 1).bit_length())
            with self._structure() as f:
                group = f.require_group(node) if node else f
                group.attrs.create(ATTRS_KEY, np.array(data, dtype=f"S{cap}"))
            self._doc_bytes[node] = cap

    def _check_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.path} was opened read-only")

    # -- protocol: arrays ---------------------------------------------------------------
    def create_array(self, node: str, spec: ArraySpec) -> None:
        self._check_writable()
        chunks = (spec.chunk_records, *(max(1, d) for d in spec.record_shape))
        maxshape = (None, *(None if d == 0 else d for d in spec.record_shape))
        with self._handle.lock, self._timed(), self._structure() as f:
            if node in f:  # left by a writer that died before committing it
                try:
                    del f[node]
                except (KeyError, RuntimeError, OSError) as exc:  # its link was cut short by the kill
                    raise ArrayNameTaken(node) from exc
            f.create_dataset(node, shape=(0, *spec.record_shape), maxshape=maxshape, chunks=chunks,
                             dtype=spec.dtype, track_times=False, **_filters(spec.codec))

    def _array(self, node: str) -> _Array | None:
        if self._generation != self._handle.generation:
            self._arrays.clear()
            self._generation = self._handle.generation
        arr = self._arrays.get(node)
        if arr is None:
            try:
                d = self._file()[node]
            except KeyError:
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
        with self._handle.lock, self._timed():
            self._swmr()
            arr = self._written_array(node)
            if length > arr.length:  # never shrink: HDF5 would drop the chunks past it
                arr.dsid.set_extent((length, *arr.tail))
                arr.length = length
                self._dirty = True

    def write_chunk(self, node: str, chunk: int, data: bytes, *, new: bool = False) -> None:
        self._check_writable()
        with self._handle.lock, self._timed():
            self._swmr()
            arr = self._written_array(node)
            row = chunk * arr.chunk_records
            if row >= arr.length:  # HDF5 takes no chunk outside the extent
                arr.dsid.set_extent((row + 1, *arr.tail))
                arr.length = row + 1
            arr.dsid.write_direct_chunk((row, *(0 for _ in arr.tail)), data)
            self.chunks_written += 1
            self._dirty = True

    def read_chunk(self, node: str, chunk: int) -> bytes | None:
        h = self._handle
        with h.lock, self._timed():
            raw = self._reading(self._read_chunk, node, chunk, False)
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
        with self._handle.lock, self._timed():
            obj = self._file()[node]
            if isinstance(obj, h5py.Dataset):
                return int(obj.id.get_storage_size())
            total = [sum(obj.attrs.get_id(k).get_storage_size() for k in obj.attrs)]

            def visit(_name: str, item: Any) -> None:
                if isinstance(item, h5py.Dataset):
                    total[0] += int(item.id.get_storage_size())

            obj.visititems(visit)
            return total[0]

    def sync(self) -> None:
        h = self._handle
        with h.lock, self._timed():
            if not self.writable or h.file is None or h.state == "read":
                return
            h.file.flush()
            os.fsync(h.file.id.get_vfd_handle())
            self._dirty = False

    def close(self) -> None:
        with self._timed():
            self._arrays.clear()
            self._finalizer()

    def stats(self) -> dict[str, float | int]:
        """Counters for benchmarks: time under h5py's lock, chunks, windows."""
        return {"h5py_seconds": self.h5py_seconds, "chunks_written": self.chunks_written,
                "windows": self.windows, "window_seconds": self.window_seconds}
