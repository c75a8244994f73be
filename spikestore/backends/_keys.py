"""The byte-level operations the Zarr backend needs, and their local-file implementation.

:class:`~spikestore.backends._zarr.ZarrBackend` speaks only :class:`Keys`:
get, put and delete the bytes of a key, and list what is below a node.
Two implementations exist:

- :class:`LocalKeys` (here): a local folder laid out exactly as zarr's
  ``LocalStore`` lays it out, written with plain file calls. A key is
  published the way ``LocalStore.set`` publishes it (a temporary file
  renamed over it, so a reader or a crash never sees half a chunk), without
  zarr's event loop, which costs more than the write itself for the small
  files the writer makes (``docs/object-storage.md`` §5 has the A/B figures).
- :class:`~spikestore.backends._remote.ZarrStoreKeys`: any
  ``zarr.abc.store.Store`` (an ``s3://`` URL through ``FsspecStore``),
  driven on zarr's own event loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path
from typing import Protocol

from spikestore._atomic_files import write_replacing
from spikestore._format import damaged
from spikestore._format.checks import MAX_DOCUMENT_BYTES
from spikestore.errors import ReadOnlyError

#: The bytes one in-place overwrite may span (a page of the page cache): a single copy into a page
#: that is already allocated, which needs no free space and which a killed process cannot tear.
_PAGE = 4096

__all__ = ["Keys", "LocalKeys"]


class Keys(Protocol):
    """Bytes under ``/``-separated keys relative to a store's root.

    A node is a key prefix (a group or an array); ``""`` is the root.
    """

    #: Whether :meth:`sync` does anything (local files with ``durable=True``).
    durable: bool

    def where(self, key: str) -> str:
        """A human-readable location of ``key`` (a file path or a URL), for messages."""

    def get(self, key: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        """The bytes stored at ``key``, or ``None`` when there are none.

        More than ``limit`` bytes there is damage
        (:class:`~spikestore.errors.DamagedStoreError`), refused before they
        are read where the storage tells their size first.
        """

    def has(self, key: str) -> bool:
        """Whether ``key`` holds bytes."""

    def put(self, key: str, data: bytes, *, in_place: bool = False) -> None:
        """Publish ``data`` at ``key`` all at once: a reader sees the old bytes or the new, never a mix.

        ``in_place=True`` says nobody reads ``key`` yet, so an implementation
        may skip what makes the publication atomic.
        """

    def overwrite_in_page(self, key: str, data: bytes) -> bool:
        """Overwrite the existing bytes of ``key`` in place when ``data`` fits in one page.

        The last resort for a final status when a new file cannot be made (a
        full disk, a folder that lost its write permission): a write of at most
        one page at offset 0 needs no new space and cannot be torn by a
        killed process. Returns ``False`` (nothing written) where that does
        not apply.
        """

    def is_node(self, node: str) -> bool:
        """Whether anything is stored at or below ``node``."""

    def children(self, node: str) -> tuple[str, ...]:
        """The names of the nodes directly below ``node`` that hold keys of their own (not its keys)."""

    def delete_node(self, node: str) -> None:
        """Delete every key at or below ``node``."""

    def nbytes(self, node: str) -> int:
        """Bytes stored at or below ``node``."""

    def sync(self) -> None:
        """Make every key put so far survive a power loss (no-op where puts already do)."""


class LocalKeys:
    """Keys as files under the folder ``root``.

    Different keys may be put from several threads at once: every put is
    its own file, and the shared caches are sets that the GIL keeps
    consistent.

    Parameters
    ----------
    root
        The store's folder; created, with its parents, at the first put.
    durable
        Remember every file put, so that :meth:`sync` can ``fsync`` them and
        their folders.
    """

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = Path(root)
        self.durable = durable
        self._root = os.fspath(self.root)
        self._dirs: set[str] = set()  # folders known to exist
        self._unsynced: list[Path] = []
        self._resolved: set[str] = set()  # folders known to lie inside the store (:meth:`_inside`)

    def where(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def get(self, key: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        """The bytes of the regular file at ``key`` inside the store (``None``: no file there).

        The file is opened without following a link (``O_NOFOLLOW``) and
        without waiting for a writer (``O_NONBLOCK``: a FIFO never blocks),
        in a folder that is inside the store (:meth:`_inside`), and its type
        and size are checked before anything is read: a link, a FIFO, a
        device, a folder, or a file of more than ``limit`` bytes (a sparse
        file of gigabytes) is damage, named, in bounded time and memory
        (``docs/format.md`` §3.2).
        """
        path = os.path.join(self._root, key)
        self._inside(os.path.dirname(path), key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError as exc:
            # Not damage: the bytes may be intact, this user may not read them.
            raise ReadOnlyError(exc.errno, "permission denied reading a file of the store (not damage: it may "
                                "be intact); give this user read access to the store's files (chmod, "
                                "chown), then try again", path) from exc
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise damaged(self.root, path, "it is a symbolic link; the store's files are regular files, "
                          "and spikestore never follows a link out of the store") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise damaged(self.root, path, f"it is {_file_type(info.st_mode)}, not a regular file")
            if info.st_size > limit:
                raise damaged(self.root, path, f"it holds {info.st_size} bytes, more than the {limit} "
                              "the format allows there")
            return _read_exactly(fd, info.st_size, limit, path, self.root)
        finally:
            os.close(fd)

    def _inside(self, folder: str, key: str) -> None:
        """Raise when ``folder`` (of ``key``) leads out of the store through a link.

        Each folder is resolved once per process: a folder linked elsewhere
        (``v/a`` a link to another disk) is damage, a folder linked to
        another folder of the same store is read as a folder of the store.
        """
        if folder in self._resolved:
            return
        root = os.path.realpath(self._root)
        real = os.path.realpath(folder)
        if real != root and not real.startswith(root + os.sep):
            raise damaged(self.root, os.path.join(self._root, key),
                          f"its folder leads out of the store through a link (to {real})")
        self._resolved.add(folder)

    def has(self, key: str) -> bool:
        return os.path.isfile(os.path.join(self._root, key))

    def _make_folder(self, folder: str) -> None:
        """Create ``folder`` inside the store, level by level from its root.

        The root itself is created once, with its parents, when the store is
        first written. Below it nothing is created with parents: a store whose
        folder was removed while recording fails with ``ENOENT`` at its next
        write instead of growing back around the streams that are gone.
        """
        if self._root not in self._dirs:
            os.makedirs(self._root, exist_ok=True)
            self._dirs.add(self._root)
        current = self._root
        for part in os.path.relpath(folder, self._root).split(os.sep):
            if part == os.curdir:
                continue
            current = os.path.join(current, part)
            if current not in self._dirs:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(current)
                self._dirs.add(current)

    def put(self, key: str, data: bytes, *, in_place: bool = False) -> None:
        path = os.path.join(self._root, key)
        folder = os.path.dirname(path)
        if folder not in self._dirs:
            self._make_folder(folder)
        if in_place:
            # Nobody reads this key yet: skip the temporary file and rename
            # (~50 us of a ~200 us file on this kind of machine).
            with open(path, "wb") as f:
                f.write(data)
        else:
            write_replacing(path, data)
        if self.durable:
            self._unsynced.append(Path(path))

    def overwrite_in_page(self, key: str, data: bytes) -> bool:
        path = os.path.join(self._root, key)
        try:
            old = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        if not stat.S_ISREG(old.st_mode) or max(len(data), old.st_size) > _PAGE:
            return False
        # Shorter text is padded with spaces (JSON allows trailing whitespace): the file never
        # shrinks, so no truncation can leave a cut document behind.
        padded = data.ljust(old.st_size, b" ")
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, padded, 0)
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def is_node(self, node: str) -> bool:
        return os.path.isdir(os.path.join(self._root, node))

    def children(self, node: str) -> tuple[str, ...]:
        with os.scandir(os.path.join(self._root, node)) as entries:
            return tuple(sorted(e.name for e in entries if e.is_dir()))

    def delete_node(self, node: str) -> None:
        folder = os.path.join(self._root, node)
        if not os.path.isdir(folder):
            return
        shutil.rmtree(folder)
        # (discard, never rebind or iterate the live set: drain threads add to it meanwhile)
        for d in list(self._dirs):
            if d == folder or d.startswith(folder + os.sep):
                self._dirs.discard(d)

    def nbytes(self, node: str) -> int:
        root = self.root / node if node else self.root
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    def sync(self) -> None:
        if not self._unsynced:
            return
        # New files and every folder between them and the root: a folder
        # created since the last sync is itself a new directory entry.
        dirs: set[Path] = set()
        for p in self._unsynced:
            d = p.parent
            while d not in dirs and (d == self.root or self.root in d.parents):
                dirs.add(d)
                d = d.parent
        for p in [*self._unsynced, *dirs]:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unsynced.clear()


def _file_type(mode: int) -> str:
    """What a file that is not a regular file is, for messages."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return f"a file of mode {mode:o}"


def _read_exactly(fd: int, size: int, limit: int, path: str, root: Path) -> bytes:
    """The bytes of the open regular file ``fd`` of ``size`` bytes; a file still growing past ``limit``
    (written while read) is refused too."""
    parts: list[bytes] = []
    got = 0
    while True:
        block = os.read(fd, max(size - got, 0) + 1 if got < size else 1 << 16)
        if not block:
            return b"".join(parts)
        parts.append(block)
        got += len(block)
        if got > limit:
            raise damaged(root, path, f"it holds more than the {limit} bytes the format allows there")
