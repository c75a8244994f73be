"""The per-process registry of open HDF5 files: one :class:`Handle` per path.

One job: open, reopen and share the h5py file of a path in this process.
HDF5 shares an open file between all openings in a process and refuses
openings with different flags (a SWMR reader next to the writer), so every
backend of a path in this process goes through one :class:`Handle`
(:func:`acquire`, :func:`release`); readers in the writer's process use the
writer's file, whose metadata cache is always current.

A handle is in one of three states: closed, ``"read"`` (SWMR read, or plain
read where SWMR is not possible), ``"write"`` (read-write without SWMR: a
structure window, see :mod:`spikestore.backends.hdf5._backend`) or
``"swmr"`` (SWMR write). Readers that find the file inside a structure
window (no SWMR reader may open it) retry for up to :data:`WINDOW_WAIT_S`,
then treat the writer as dead and read through a
:class:`~spikestore.backends.hdf5._superblock.RecoveredView`.

A write that fails breaks the handle for good (:meth:`Handle.writing`, see
:mod:`spikestore.backends.hdf5._faults`): HDF5 writes nothing more to the
file, and a file HDF5 then cannot close stays with HDF5 until the process
exits, so later readers in this process read it through a recovered view
instead of sharing HDF5's broken file, and writers here are refused.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from spikestore.backends.hdf5._faults import SpaceError, fence, io_error, opening_error, reserve
from spikestore.backends.hdf5._headers import create_file
from spikestore.backends.hdf5._native import READ_ATTEMPTS, swmr_read_fapl, swmr_write_fapl
from spikestore.backends.hdf5._superblock import (
    FLAG_SWMR,
    FLAG_WRITE,
    RecoveredView,
    Superblock,
    clear_writer_flags,
)
from spikestore.errors import SpikestoreError, StoreInUseError

__all__ = ["HANDLES", "LEAKED", "LIBVER", "WINDOW_WAIT_S", "Handle", "acquire", "open_elsewhere_here", "release"]

_log = logging.getLogger("spikestore")
#: Oldest HDF5 file format that SWMR needs (HDF5 1.10); also the newest
#: used, so any HDF5 >= 1.10 reads the file.
LIBVER = ("v110", "v110")
#: How long a reader waits for the writer to leave a structure window before
#: it treats the writer as dead and reads through a recovered view.
WINDOW_WAIT_S = 2.0


class Handle:
    """The h5py file this process keeps open for one path.

    HDF5 shares one open file between every opening in a process and
    refuses openings whose flags differ (SWMR read next to read-write, say),
    so all readers and the writer of a path in one process go through one
    handle, serialised by its lock. Readers in the writer's process then
    see the writer's own metadata cache, which is always current.

    Parameters
    ----------
    key
        The absolute path of the file.

    Attributes
    ----------
    lock
        Held around every use of :attr:`file`.
    file
        The open file, or ``None`` while closed (or when it would not open).
    state
        ``"closed"``, ``"read"``, ``"write"`` (read-write, no SWMR) or ``"swmr"``.
    generation
        Bumped at every (re)open: h5py objects taken from an older
        generation are dead.
    users
        Backends that hold this handle.
    writer
        Whether one of them writes.
    error
        Why the last :meth:`open_read` found no file, if it did not.
    broken
        The first write that failed (as :func:`~spikestore.backends.hdf5._faults.io_error`
        made it), after which nothing is written any more.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.path = Path(key)
        self.lock = threading.RLock()
        self.file: h5py.File | None = None
        self.view: RecoveredView | None = None
        self.state = "closed"
        self.generation = 0
        self.users = 0
        self.writer = False
        self.error: OSError | None = None
        self.broken: OSError | None = None

    @contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """Around every HDF5 call that may write: its first failure breaks the handle.

        Raises the failure as an ``OSError`` with the system's ``errno`` (see
        :func:`~spikestore.backends.hdf5._faults.io_error`), and the same
        again at every later write.
        """
        if self.broken is not None:
            b = self.broken
            raise OSError(b.errno, f"{b.strerror} (nothing is written to this file since)", b.filename)
        try:
            yield
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, SpikestoreError) or exc is self.broken:
                raise
            err = io_error(exc, self.path, what)
            if not isinstance(exc, SpaceError):  # (that one changed nothing: the file is whole)
                self.fail(err)
            raise err from exc

    def fail(self, err: OSError) -> None:
        """Stop writing for good: fence HDF5's descriptor, so nothing more reaches the file."""
        if self.broken is None:
            self.broken = err
        if self.file is not None and self.state != "read":
            try:
                fd = self.file.id.get_vfd_handle()
            except Exception:  # noqa: BLE001 - no descriptor, whatever h5py says: nothing to fence
                return
            fence(fd, self.path, None)

    def check_path(self) -> None:
        """Raise ``OSError(ENOENT)`` if the path no longer names the file HDF5 writes.

        A file removed (or replaced) while recording would take every later
        record with it without an error: the writer checks at each commit.
        """
        assert self.file is not None
        st = os.fstat(self.file.id.get_vfd_handle())
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise OSError(errno.ENOENT, "the file was removed or replaced while it was being written",
                          str(self.path))

    @contextmanager
    def window(self, what: str, nbytes: int) -> Iterator[h5py.File]:
        """A structure window: the file out of SWMR mode, back in SWMR after.

        ``nbytes`` past the end of the file are reserved first
        (:func:`~spikestore.backends.hdf5._faults.reserve`), so a full disk
        stops the window before it changes anything. After an HDF5 failure
        inside, SWMR is not restarted: that would flush a half-made change
        outside SWMR's write order; :meth:`writing` fences the file instead.
        """
        with self.writing(what):
            if self.state != "write":
                self.open_write(create=False)  # closing the SWMR file flushes it
            assert self.file is not None
            try:
                reserve(self.file.id.get_vfd_handle(), nbytes)
            except OSError:
                self.start_swmr()  # nothing changed: back to SWMR, then report the lack of space
                raise
            try:
                yield self.file
            except SpikestoreError:  # refused on purpose (ArrayNameTakenError): nothing half made
                self.start_swmr()
                raise
            self.start_swmr()

    def close(self) -> None:
        """Close the file (a clean close clears the superblock's writer flags). Never raises.

        A file HDF5 cannot close (its cache failed a write before) is fenced,
        kept as :attr:`broken`, and never shared by a later opening here;
        what was flushed before stays readable.
        """
        f, self.file = self.file, None
        self.state, writing = "closed", self.state in ("write", "swmr")
        if self.view is not None:
            self.view.close()
            self.view = None
        if f is None:
            return
        fd = ident = None
        if writing:
            try:
                fd = f.id.get_vfd_handle()
                st = os.fstat(fd)
                ident = (st.st_dev, st.st_ino)
            except Exception:  # noqa: BLE001 - no descriptor: then nothing can be fenced below
                fd = None
        try:
            f.close()
        except Exception as exc:  # noqa: BLE001 - h5py raises whatever HDF5 reported
            LEAKED.add(self.key)  # HDF5 keeps the file: never share it again
            if fd is not None:
                fence(fd, self.path, ident)
            if self.broken is None:
                self.broken = io_error(exc, self.path, "close the file")
            _log.warning("spikestore: %s", self.broken)

    def open_read(self) -> None:
        """(Re)open read-only; another process may be writing (SWMR) or have died.

        Leaves :attr:`file` ``None`` (and the reason in :attr:`error`) when the
        path holds no HDF5 file that opens.
        """
        self.close()
        self.generation += 1
        self.error = None
        if self.key in LEAKED:  # HDF5 still holds a file a writer here could not close
            self._open_view()
            return
        deadline = time.monotonic() + WINDOW_WAIT_S
        while True:
            try:
                fid = h5py.h5f.open(os.fsencode(self.path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ,
                                    fapl=swmr_read_fapl(1 if self.writer else READ_ATTEMPTS))
                self.file = h5py.File(fid)
                self.state = "read"
                return
            except OSError as exc:
                self.error = exc
            sb = Superblock.read(self.path)
            if sb is None:  # not an HDF5 file with a SWMR superblock
                self._open_plain()
                return
            if open_elsewhere_here(self.path) and self._open_plain():
                # This process has the file open without SWMR (plain h5py), and
                # HDF5 refuses a SWMR reader next to it but shares that opening.
                return
            if time.monotonic() > deadline:
                if sb.flags & FLAG_WRITE and not sb.flags & FLAG_SWMR:
                    # Still "open for write, not SWMR": the writer died in a window.
                    self._open_view(sb)
                return
            time.sleep(0.005)  # a writer between SWMR sessions (a structure window)

    def _open_view(self, sb: Superblock | None = None) -> None:
        """Read through a :class:`RecoveredView` (flags cleared, in memory only)."""
        try:
            sb = sb or Superblock.read(self.path)
            if sb is None:
                self._open_plain()
                return
            self.view = RecoveredView(self.path, sb)
            self.file = h5py.File(self.view, "r")
            self.state = "read"
        except OSError as exc:
            self.error = exc

    def _open_plain(self) -> bool:
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            self.error = exc
            return False
        self.state = "read"
        return True

    def start_writer(self) -> bool:
        """Become the writer's handle: create the file (return True), or check now that it can be written.

        Raises
        ------
        SpikestoreError
            :func:`~spikestore.backends.hdf5._faults.opening_error` of why not.
        """
        created = False
        try:
            if not self.path.exists():
                self.open_write(create=True)  # SWMR starts with the root document
                created = True
            else:  # refused now rather than at the first write (a read-only file, say)
                os.close(os.open(self.path, os.O_RDWR | os.O_CLOEXEC))
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, SpikestoreError):
                raise
            raise opening_error(io_error(exc, self.path, "open the file for writing"), self.path) from exc
        if self.state == "closed":
            # Store(mode="a") reads before it writes. It holds the writer lock, so
            # flags a killed writer left are stale: cleared, not waited out.
            clear_writer_flags(self.path)
            self.open_read()
        return created

    def open_write(self, *, create: bool) -> None:
        """Open read-write without SWMR (creating the file, or resuming it).

        Parameters
        ----------
        create
            Create the file (which must not exist) instead of opening it.
        """
        resuming = not create and self.state in ("closed", "read")
        if self.key in LEAKED:
            raise StoreInUseError(f"{self.path}: HDF5 in this process still holds this file since a write to it "
                                  "failed; append to it from a new process")
        self.close()
        self.generation += 1
        if create:
            self.file = create_file(self.path, LIBVER)  # (group headers with room: see _headers)
        else:
            if resuming:
                # Store(mode="a") has checked that the last writer is gone, so
                # flags it left are stale.
                clear_writer_flags(self.path)
            self.file = h5py.File(self.path, "r+", libver=LIBVER, locking=False)
        self.state = "write"

    def start_swmr(self) -> None:
        """Go from ``"write"`` to ``"swmr"``: close the file (which flushes it), reopen it for SWMR writing.

        Reopened, not switched (``swmr_mode = True``): only a file opened for
        SWMR writing takes bounded metadata read attempts
        (:func:`~spikestore.backends.hdf5._native.swmr_write_fapl`); a switched
        one retried a header a killed writer had left half written for hours.
        """
        assert self.file is not None and self.state == "write"
        self.close()
        if self.key in LEAKED:  # HDF5 could not close it: its failure, as every later write gets it
            assert self.broken is not None
            raise self.broken
        self.generation += 1
        fid = h5py.h5f.open(os.fsencode(self.path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE,
                            fapl=swmr_write_fapl(LIBVER))
        self.file = h5py.File(fid)
        self.state = "swmr"


def open_elsewhere_here(path: Path) -> bool:
    """Whether this process has ``path`` open through some other h5py file."""
    for fid in h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE):
        try:
            if os.path.samefile(os.fsdecode(fid.name), path):
                return True
        except OSError:
            continue
    return False


#: The handle of every path some backend in this process has open, by absolute path.
HANDLES: dict[str, Handle] = {}
#: Files HDF5 could not close after a failed write (it keeps them until exit), by absolute path.
LEAKED: set[str] = set()
_HANDLES_LOCK = threading.RLock()


def acquire(path: Path) -> Handle:
    """The handle of ``path``, created if needed, with one more user.

    Pair every call with :func:`release`. The handle may be closed (a new
    one, say): look at its :attr:`~Handle.state` under its lock.
    """
    key = os.path.abspath(path)
    with _HANDLES_LOCK:
        handle = HANDLES.get(key)
        if handle is None:
            handle = HANDLES[key] = Handle(key)
        handle.users += 1
        return handle


def release(handle: Handle, writer: bool) -> None:
    """Give back a handle from :func:`acquire`; the last user closes the file.

    Parameters
    ----------
    handle
        The handle.
    writer
        Whether this user was its writer: the file is then closed (clearing
        the superblock's writer flags) and reopened for the readers left.
    """
    # Lock order everywhere: a handle's lock, then _HANDLES_LOCK (a finaliser
    # may run this from inside a backend call that holds the handle's lock).
    with handle.lock:
        with _HANDLES_LOCK:
            handle.users -= 1
            users = handle.users
            if not users and HANDLES.get(handle.key) is handle:
                del HANDLES[handle.key]
        if writer:
            handle.writer = False
            try:
                handle.close()  # a clean close clears the superblock's writer flags
            finally:
                if users:
                    handle.open_read()
        elif not users:
            handle.close()
