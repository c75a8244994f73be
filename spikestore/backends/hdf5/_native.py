"""Direct calls into the HDF5 library that h5py loaded, for what h5py does not wrap.

One job: give SWMR readers and writers file access properties that fail
instead of hanging. HDF5 retries a metadata read whose checksum fails (the
writer may be halfway through writing it), sleeping twice as long each
time; its default of 100 attempts turns a lasting mismatch (metadata this
reader cached before a structure window, or a header a killed writer left
half written) into a wait of hours. h5py has no
binding for ``H5Pset_metadata_read_attempts``, so it is called through
:mod:`ctypes` on the very library copy h5py uses (only that copy knows
h5py's property lists). Where that copy cannot be found, readers keep
HDF5's default.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

import h5py

__all__ = ["READ_ATTEMPTS", "hdf5_library", "swmr_read_fapl", "swmr_write_fapl"]

#: Metadata read attempts of a SWMR reader: 30 attempts wait about a second
#: in all, then fail, and the reader reopens the file.
READ_ATTEMPTS = 30


@functools.cache
def hdf5_library() -> ctypes.CDLL | None:
    """The HDF5 library that h5py itself loaded.

    Returns
    -------
    ctypes.CDLL or None
        The library, or ``None`` where it cannot be found.
    """
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


def _read_attempts(fapl: Any, attempts: int) -> Any:
    lib = hdf5_library()
    if lib is not None:
        lib.H5Pset_metadata_read_attempts(ctypes.c_int64(fapl.id), ctypes.c_uint(attempts))
    return fapl


def swmr_write_fapl(libver: tuple[str, str]) -> Any:
    """File access properties of the SWMR writer: one metadata read attempt, no file locking.

    The writer is the file's only writer, so a checksum that fails is damage
    (a header a killed writer left half written), never a race: it is
    reported at once. HDF5 takes the setting only from a file opened for
    SWMR writing, not from one switched to SWMR after opening.
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    bounds = {"v110": h5py.h5f.LIBVER_V110, "latest": h5py.h5f.LIBVER_LATEST}
    fapl.set_libver_bounds(bounds[libver[0]], bounds[libver[1]])
    fapl.set_file_locking(False, True)
    return _read_attempts(fapl, 1)


def swmr_read_fapl(attempts: int = READ_ATTEMPTS) -> Any:
    """File access properties of a SWMR reader: bounded metadata read attempts.

    Parameters
    ----------
    attempts
        :data:`READ_ATTEMPTS` for a reader, which may race a live writer;
        1 for a writer resuming the file, whose previous writer is gone.

    Returns
    -------
    h5py.h5p.PropFAID
        A new file access property list, with ``attempts`` set where
        :func:`hdf5_library` finds the library.
    """
    return _read_attempts(h5py.h5p.create(h5py.h5p.FILE_ACCESS), attempts)
