"""One writer per store, enforced by the operating system: :class:`WriterLock`.

A :class:`~spikestore.Store` locks two things before it creates, replaces or
deletes anything, and holds both until it closes:

* **the store itself**: an exclusive ``flock`` on the Zarr store's folder, an
  exclusive open-file-description lock (``F_OFD_SETLK``) on one byte of the
  HDF5 file (HDF5's own readers take ``flock`` locks on the file, which this
  one never meets). These locks belong to the folder or file, not to a name:
  a second writer reaching the store through a symbolic link, a hard link or
  a bind mount meets the same lock, and nothing a user does beside the store
  releases it. A store created here is locked as soon as it exists (a
  Zarr store's folder is made first, then locked).
* **the lock file beside the store** (``run.zarr`` → ``run.zarr.lock``), an
  exclusive ``flock``: it keeps two writers apart while the store does not
  exist yet, or while ``overwrite=True`` deletes an HDF5 file and creates a
  new one, and it tells a refused writer who holds the store. It is removed
  at close; a writer that finds the file replaced between opening and
  locking it (another writer removed it meanwhile) starts over.

A second writer, in this process (every ``open`` is its own lock) or
another, is refused at once with :class:`~spikestore.errors.StoreInUseError`;
the first is untouched, and ``overwrite=True`` deletes nothing it holds.
When a writer dies, the kernel drops its locks with its file descriptors, so
appending after a crash needs no guess about whether the old process still
runs. Readers never take a lock. Where the file system cannot lock the store
itself (``flock`` on a folder over NFS, say, or no ``F_OFD_SETLK`` outside
Linux), the lock file beside it is the lock (``docs/reliability.md`` §4).

Stores behind a URL get a leased lock object instead
(:class:`~spikestore._write.lease.LeasedWriterLock`, ``docs/object-storage.md`` §3).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from spikestore._failures import FIXES, storage_error
from spikestore.backends import Location
from spikestore.errors import SpikestoreError, StoreInUseError

if TYPE_CHECKING:
    pass

__all__ = ["LOCK_SUFFIX", "WriterLock", "cannot_write", "in_use"]

_log = logging.getLogger("spikestore")

#: Suffix of the lock file beside the store: ``<store path>.lock``.
LOCK_SUFFIX = ".lock"
_ATTEMPTS = 20
#: The byte of an HDF5 file that its writer locks: far past any end of file, where no other program locks.
_LOCKED_BYTE = 1 << 62
#: What a file system says when it cannot lock a folder or a file the way asked.
_UNSUPPORTED = frozenset({errno.ENOLCK, errno.EBADF, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
_HELD = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})


class WriterLock:
    """The exclusive writer lock of the store at ``path`` (taken by :meth:`acquire`).

    Parameters
    ----------
    path
        The store's path (a Zarr folder or an HDF5 file); the lock file beside
        it is ``path`` + :data:`LOCK_SUFFIX` (symbolic links resolved).
    folder
        Whether the store is a folder (Zarr): a new one is created by
        :meth:`acquire`, so that it is locked before anything is written.
    """

    def __init__(self, path: Path, *, folder: bool = False) -> None:
        self.given = Path(path)
        # Symbolic links and relative paths to one store share one lock file.
        self.store = Path(os.path.realpath(path))
        self.path = self.store.with_name(self.store.name + LOCK_SUFFIX)
        self._folder = folder
        self._fd: int | None = None  # the lock file beside the store
        self._store_fd: int | None = None  # the store itself
        self._made: Path | None = None  # the folder this lock created, removed again if left empty
        self._creating = False
        self._pid = os.getpid()

    def acquire(self, *, create: bool = False) -> None:
        """Take the lock now, or raise :class:`StoreInUseError` naming the writer that holds it.

        Parameters
        ----------
        create
            A store is about to be created: a Zarr store's folder is made
            now (when missing), so that it is locked from the start.

        Raises
        ------
        StoreInUseError
            Another writer, in this process or another one, holds the lock.
        ReadOnlyError, StoreNotFoundError, WriterError
            The lock file cannot be created or written (a read-only file
            system, no permission, a full disk): the store could not be
            written either. The message names the cause and the fix.
        """
        try:
            self._take()
        except StoreInUseError:
            raise
        except OSError as exc:
            raise cannot_write(exc, self.store, f"creating its writer lock {self.path}") from exc
        self._creating = create
        try:
            self.hold_store()
        except BaseException as exc:
            self.release()
            if isinstance(exc, OSError) and not isinstance(exc, SpikestoreError):
                raise cannot_write(exc, self.store, "locking the store") from exc
            raise

    def hold_store(self) -> None:
        """Lock the store itself, as it is at the path now (nothing when there is none yet).

        Called by :meth:`acquire`, and again once the store has been created
        or replaced: the lock then moves to the new file. When a store is
        being created, a Zarr store's missing folder is made here first.

        Raises
        ------
        StoreInUseError
            Another writer holds the store (reached through another name).
        OSError
            The store cannot be opened.
        """
        if self._creating and self._folder and not os.path.lexists(self.given):
            os.makedirs(self.given)  # the new Zarr store's folder, locked before anything is written into it
            self._made = self.given
        for _ in range(_ATTEMPTS):
            try:
                st = os.stat(self.given)
            except FileNotFoundError:
                return
            if self._store_fd is not None and _same(os.fstat(self._store_fd), st):
                return
            fd = _lock_store(self.given, st)
            if fd is None:
                return  # this file system cannot lock it: the lock file beside it is the lock
            try:
                now = os.stat(self.given)
            except FileNotFoundError:
                now = None
            if now is not None and _same(os.fstat(fd), now):
                old, self._store_fd = self._store_fd, fd
                if old is not None:
                    os.close(old)
                return
            os.close(fd)  # replaced between opening and locking: lock what is there now
        raise StoreInUseError(f"{self.store}: could not lock the store after {_ATTEMPTS} attempts; "
                              "something keeps replacing it")

    def _take(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in _HELD:
                    raise
                raise in_use(self.store, holder) from None
            if _same_file(fd, self.path):
                try:
                    _write_holder(fd)
                except OSError:
                    os.close(fd)
                    raise
                self._fd = fd
                return
            os.close(fd)  # the file was removed by a writer that just closed: lock the new one
        raise StoreInUseError(f"{self.store}: could not take the writer lock {self.path} "
                              f"after {_ATTEMPTS} attempts; writers keep opening and closing it")

    def release(self) -> None:
        """Drop the lock on the store, then remove the lock file beside it and drop that lock (idempotent)."""
        store_fd, self._store_fd = self._store_fd, None
        fd, self._fd = self._fd, None
        made, self._made = self._made, None
        if os.getpid() != self._pid:
            # A forked child shares the parent's locks: closing its copies of the
            # descriptors leaves the locks (and the file) to the parent.
            for d in (store_fd, fd):
                if d is not None:
                    os.close(d)
            return
        if made is not None:
            # A folder this writer made and never wrote to (a store that failed to open); a store is not empty.
            with contextlib.suppress(OSError):
                os.rmdir(made)
        if store_fd is not None:
            os.close(store_fd)
        if fd is None:
            return
        try:
            # Removed while still held, so no other writer can lock this file after us.
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass  # a read-only or vanished folder: the kernel still drops the lock below
        finally:
            os.close(fd)

def in_use(store: Location, holder: str) -> StoreInUseError:
    """The refusal a second writer of ``store`` gets, naming ``holder``."""
    return StoreInUseError(
        f"{store} is being written by {holder}; close that writer first (a store has one writer at a time; "
        "readers can use spikestore.open while it runs)")


def _lock_store(path: Path, st: os.stat_result) -> int | None:
    """A descriptor of the store at ``path`` holding its exclusive lock (``None``: it cannot be locked here).

    Raises
    ------
    StoreInUseError
        Another open file description holds it (another writer, through any name).
    """
    import fcntl

    if stat.S_ISDIR(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

        def lock() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    elif stat.S_ISREG(st.st_mode):
        ofd = getattr(fcntl, "F_OFD_SETLK", None)
        if ofd is None:
            return None
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for an open-file-description lock)
        spec = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _LOCKED_BYTE, 1, 0)

        def lock() -> None:
            fcntl.fcntl(fd, ofd, spec)
    else:
        return None  # not a store: opening it as one says what it is
    try:
        lock()
    except OSError as exc:
        os.close(fd)
        if exc.errno in _UNSUPPORTED:
            _log.debug("spikestore: %s cannot be locked on this file system (%s); the lock file beside it "
                       "is its writer lock", path, exc)
            return None
        if exc.errno in _HELD:
            raise in_use(path, "another writer (it holds the lock on the store itself)") from None
        raise
    return fd


def cannot_write(exc: OSError, store: Location, doing: str) -> SpikestoreError:
    """Why a writer cannot open ``store``, as a :class:`~spikestore.errors.SpikestoreError`.

    The lock file is the first thing a writer creates, beside the store, so
    this is where a read-only file system or a missing permission usually
    shows; ``Store`` uses it too for what fails while it creates or resumes
    the store's own files. ``doing`` says what was being written. The class
    and the fix follow :func:`spikestore._failures.storage_error`.
    """
    reason = exc.strerror or str(exc)
    where = exc.filename if exc.filename is not None else str(store)
    return storage_error(exc, f"cannot write the store {store}: {reason} ({doing})", writing=True, where=where,
                         fix=FIXES.get(exc.errno or 0, "check the folder can be written"))


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return _same(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _write_holder(fd: int) -> None:
    data = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it (a description, never trusted for anything else)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {int(info['pid'])} on {str(info['host'])[:255]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another writer"
