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
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import h5py

from spikestore.backends.hdf5._native import swmr_read_fapl
from spikestore.backends.hdf5._superblock import (
    FLAG_SWMR,
    FLAG_WRITE,
    RecoveredView,
    Superblock,
    clear_writer_flags,
)

__all__ = ["HANDLES", "LIBVER", "WINDOW_WAIT_S", "Handle", "acquire", "open_elsewhere_here", "release"]

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

    def close(self) -> None:
        """Close the file (a clean close clears the superblock's writer flags)."""
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
                                    fapl=swmr_read_fapl())
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
                    self.view = RecoveredView(self.path, sb)
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
        """Open read-write without SWMR (creating the file, or resuming it).

        Parameters
        ----------
        create
            Create the file (which must not exist) instead of opening it.
        """
        resuming = not create and self.state in ("closed", "read")
        self.close()
        self.generation += 1
        if create:
            self.file = h5py.File(self.path, "w-", libver=LIBVER, locking=False)
        else:
            if resuming:
                # Store(mode="a") has checked that the last writer is gone, so
                # flags it left are stale.
                clear_writer_flags(self.path)
            self.file = h5py.File(self.path, "r+", libver=LIBVER, locking=False)
        self.state = "write"

    def start_swmr(self) -> None:
        """Go from ``"write"`` to ``"swmr"`` (HDF5 flushes everything first)."""
        assert self.file is not None and self.state == "write"
        self.file.swmr_mode = True
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
            handle.close()  # a clean close clears the superblock's writer flags
            if users:
                handle.open_read()
        elif not users:
            handle.close()
