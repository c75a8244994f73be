"""When the file system fails an HDF5 writer: clear errors, and nothing half written.

One job: keep the file readable, with every committed record, when a write
fails (a full disk, a lost permission, a removed folder). HDF5 makes this
harder than it looks:

- After a failed write, HDF5's metadata cache stays in an error state:
  every later flush or close fails too ("slist already enabled?"), and each
  attempt may still write some of the cache's entries, in no particular
  order outside SWMR. So the first failure *fences* the file
  (:func:`fence`): HDF5's descriptor is replaced by a read-only one, and
  nothing more reaches the disk. What is there is the last flush, which in
  SWMR mode HDF5 wrote in an order its readers can follow.
- A structure window (``docs/format.md`` §10.3) runs outside SWMR, where a
  flush cut short by a full disk can leave an old object pointing at a new
  one that was never written. Before a window changes anything,
  :func:`reserve` makes sure the space it will write is allocated (or fails
  first, with nothing changed).
- h5py reports HDF5's failures as ``OSError`` or ``RuntimeError`` and keeps
  the system's reason only inside the message. :func:`io_error` turns them
  into an ``OSError`` with that ``errno``, which
  :func:`spikestore._failures.classify` then sorts like any other storage
  failure (the writer stops as a whole), and :func:`opening_error` into a
  :class:`~spikestore.errors.SpikestoreError` for a store that cannot even
  be created.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import re
from pathlib import Path

from spikestore._failures import FIXES, storage_error
from spikestore.errors import SpikestoreError

__all__ = ["WINDOW_RESERVE", "SpaceError", "fence", "io_error", "opening_error", "reserve"]

#: Bytes allocated at the end of the file before a structure window: far more
#: than the objects a window creates (a few KiB), plus the document it writes.
WINDOW_RESERVE = 64 << 10
_ERRNO = re.compile(r"errno = (\d+)")
_FALLOC_FL_KEEP_SIZE = 1


class SpaceError(OSError):
    """:func:`reserve` found too little room: nothing was written, the file is whole."""


def io_error(exc: BaseException, path: Path, what: str) -> OSError:
    """HDF5's failure ``exc`` while it ``what`` as an ``OSError`` with the system's ``errno``.

    The ``errno`` is h5py's where it set one, else the one HDF5 quotes
    (``errno = 28``), else ``EIO``: whatever broke, HDF5's cache is unusable
    and nothing more can be written to the file.
    """
    no = exc.errno if isinstance(exc, OSError) and exc.errno else None
    if no is None:
        found = _ERRNO.search(str(exc))
        no = int(found.group(1)) if found else errno.EIO
    detail = str(exc).split("\n")[0][:300]
    fix = FIXES.get(no, "the records committed before stay readable")
    err = OSError(no, f"{os.strerror(no)}: HDF5 could not {what} ({detail}); {fix}", str(path))
    err.__cause__ = exc
    return err


def opening_error(err: OSError, path: Path) -> SpikestoreError:
    """The error for a store that cannot be created or opened for writing."""
    return storage_error(err, f"cannot write the HDF5 store {path}: {err.strerror or err}", writing=True,
                         where=str(path))


def fence(fd: int, path: Path, identity: tuple[int, int] | None) -> None:
    """Make HDF5's descriptor ``fd`` of ``path`` read-only: its writes fail from now on.

    ``identity`` is ``(st_dev, st_ino)`` of the file, taken while ``fd`` was
    known to be HDF5's; a descriptor that no longer is (HDF5 closed it and
    the number was reused) is left alone, as is a file that cannot be
    reopened (removed, say: then nobody reads what HDF5 writes anyway).
    """
    with contextlib.suppress(OSError):
        st = os.fstat(fd)
        if identity is not None and (st.st_dev, st.st_ino) != identity:
            return
        ro = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            rst = os.fstat(ro)
            if (rst.st_dev, rst.st_ino) == (st.st_dev, st.st_ino):
                os.dup2(ro, fd, inheritable=False)
        finally:
            os.close(ro)


@functools.cache
def _libc_fallocate() -> object | None:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


def reserve(fd: int, nbytes: int) -> None:
    """Make sure ``nbytes`` past the end of the file ``fd`` can be written, or raise ``OSError``.

    Allocates them without changing the file's length (Linux
    ``fallocate(FALLOC_FL_KEEP_SIZE)``), so writes there cannot meet a full
    disk. Where that is not supported, checks the free space instead, and the
    file-size limit (``RLIMIT_FSIZE``) everywhere.
    """
    size = os.fstat(fd).st_size
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and size + nbytes > limit:
            raise SpaceError(errno.EFBIG, os.strerror(errno.EFBIG))
    except ImportError:  # (not on Windows)
        pass
    fn = _libc_fallocate()
    if fn is not None:
        if fn(fd, _FALLOC_FL_KEEP_SIZE, size, nbytes) == 0:  # type: ignore[operator]
            return
        no = ctypes.get_errno()
        if no not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise SpaceError(no, os.strerror(no))
    st = os.fstatvfs(fd)
    if st.f_bavail * st.f_frsize < nbytes:
        raise SpaceError(errno.ENOSPC, os.strerror(errno.ENOSPC))
