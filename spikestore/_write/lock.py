"""One writer per store, enforced by the operating system: :class:`WriterLock`.

A :class:`~spikestore.Store` takes an exclusive ``flock`` on a lock file next
to the store (``run.zarr`` → ``run.zarr.lock``) before it creates, replaces
or deletes anything, and holds it until it closes. A second writer, in this
process (every ``open`` is its own lock) or another, is refused at once with
:class:`~spikestore.errors.StoreInUseError` naming the holder; the first is
untouched. When a writer dies, the kernel drops its lock with its file
descriptors, so appending after a crash needs no guess about whether the old
process still runs. Readers never take the lock.

The lock file lives beside the store, not inside it, so that
``overwrite=True`` can delete the store while holding it. It is removed at
close; a writer that finds the file replaced between opening and locking it
(another writer removed it meanwhile) starts over, so two writers can never
hold locks on two different files of one path.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

from spikestore._failures import FIXES, storage_error
from spikestore.backends import Location, StoreURL
from spikestore.errors import SpikestoreError, StoreInUseError

__all__ = ["LOCK_SUFFIX", "WriterLock", "cannot_write"]

#: Suffix of the lock file: ``<store path>.lock``.
LOCK_SUFFIX = ".lock"
_ATTEMPTS = 20


class WriterLock:
    """The exclusive writer lock of the store at ``path`` (taken by :meth:`acquire`).

    Parameters
    ----------
    path
        The store's path (a Zarr folder or an HDF5 file); the lock file is
        ``path`` + :data:`LOCK_SUFFIX`.
    """

    def __init__(self, path: Path) -> None:
        # Symbolic links and relative paths to one store share one lock.
        self.store = Path(os.path.realpath(path))
        self.path = self.store.with_name(self.store.name + LOCK_SUFFIX)
        self._fd: int | None = None
        self._pid = os.getpid()

    def acquire(self) -> None:
        """Take the lock now, or raise :class:`StoreInUseError` naming the writer that holds it.

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
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise StoreInUseError(
                    f"{self.store} is being written by {holder}; close that writer first (a store has one "
                    "writer at a time; readers can use spikestore.open while it runs)") from None
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
        """Remove the lock file and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if os.getpid() != self._pid:
            # A forked child shares the parent's lock: closing its copy of the
            # descriptor leaves the lock (and the file) to the parent.
            os.close(fd)
            return
        try:
            # Removed while still held, so no other writer can lock this file after us.
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass  # a read-only or vanished folder: the kernel still drops the lock below
        finally:
            os.close(fd)


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


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


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


class NoWriterLock:
    """The stand-in for :class:`WriterLock` on object storage, where no lock is taken.

    An object store has no ``flock``, and a lock object left by a killed
    writer would never be released, so a store behind a URL is written only
    when the caller says it has one writer (``Store(..., lock=False)``;
    ``docs/object-storage.md`` §4).
    """

    def __init__(self, store: StoreURL) -> None:
        self.store = store

    def acquire(self) -> None:
        """Nothing to take."""

    def release(self) -> None:
        """Nothing to release."""


def writer_lock(store: Location, lock: bool) -> WriterLock | NoWriterLock:
    """The writer lock of ``store``: :class:`WriterLock` for a local path, :class:`NoWriterLock` for a URL.

    Raises
    ------
    InvalidArgumentError
        A URL without ``lock=False`` (the single-writer promise), or
        ``lock=False`` for a local path, where the lock always works.
    """
    from spikestore.errors import InvalidArgumentError

    if not isinstance(store, StoreURL):
        if not lock:
            raise InvalidArgumentError(
                f"lock=False applies to stores behind a URL only; {store} is local, where the writer lock "
                "always works: drop lock=False")
        return WriterLock(store)
    if lock:
        raise InvalidArgumentError(
            f"{store}: object storage has no writer lock, so spikestore cannot stop a second writer from "
            "corrupting this store; make sure only one process records to this URL (one URL per run, or per "
            "rank) and pass lock=False to say so (docs/object-storage.md)")
    return NoWriterLock(store)
