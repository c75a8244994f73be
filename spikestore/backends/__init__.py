"""Storage backends behind one small protocol (:class:`Backend`).

Nothing outside this package branches on the storage format: the writer and
the reader speak only the protocol below, so Zarr and HDF5 stores hold the
same logical content. A store is at a local path (``pathlib.Path``) or
behind a URL (:class:`StoreURL`, ``s3://bucket/run.zarr``: Zarr only, through
zarr's own store classes; ``docs/object-storage.md``).
"""

from __future__ import annotations

from collections.abc import Callable

from spikestore.backends._base import ArraySpec, Backend
from spikestore.backends._location import Location, StoreURL, is_url, location, part_location
from spikestore.errors import InvalidArgumentError

__all__ = [
    "ArraySpec",
    "Backend",
    "Location",
    "StoreURL",
    "backend_name_for",
    "clear_for_new_url",
    "is_url",
    "location",
    "open_backend",
    "part_location",
]

_HDF5_SUFFIXES = (".h5", ".hdf5")


def backend_name_for(path: Location, backend: str | None) -> str:
    """Pick the backend from an explicit name or the path's suffix.

    Raises
    ------
    InvalidArgumentError
        For an unknown name, or HDF5 behind a URL (HDF5 stores are local files).
    """
    if backend is None:
        name = "hdf5" if path.suffix.lower() in _HDF5_SUFFIXES else "zarr"
    elif backend not in ("zarr", "hdf5"):
        raise InvalidArgumentError(f"backend must be 'zarr' or 'hdf5', not {backend!r}")
    else:
        name = backend
    if name == "hdf5" and isinstance(path, StoreURL):
        raise InvalidArgumentError(
            f"{path}: HDF5 stores are local files; record to object storage with the Zarr backend "
            f"(a URL ending in .zarr), or to a local .h5 file and copy it")
    return name


def open_backend(path: Location, *, backend: str | None, writable: bool, durable: bool = False,
                 guard: Callable[[], None] | None = None) -> Backend:
    """Open the backend for ``path`` (which must already exist when reading).

    ``durable`` asks local files to be fsynced at each commit; behind a URL
    every acknowledged write is durable already, so it changes nothing there.
    ``guard``, behind a URL, is called before every write, and raises to stop
    the writer (its lock's lease is lost).
    """
    name = backend_name_for(path, backend)  # (never HDF5 behind a URL)
    from spikestore.backends._zarr import ZarrBackend

    if isinstance(path, StoreURL):
        from spikestore.backends._remote import ZarrStoreKeys

        return ZarrBackend(path, writable=writable, durable=durable,
                           keys=ZarrStoreKeys.from_url(path, writable=writable, guard=guard))
    if name == "hdf5":
        from spikestore.backends.hdf5 import HDF5Backend

        return HDF5Backend(path, writable=writable, durable=durable)
    return ZarrBackend(path, writable=writable, durable=durable)


def clear_for_new_url(url: StoreURL, overwrite: bool) -> None:
    """Make way for a new store at ``url``: refuse one that holds objects unless ``overwrite``."""
    from spikestore.backends._remote import clear_url

    clear_url(url, overwrite)
