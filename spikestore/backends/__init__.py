"""Storage backends behind one small protocol (:class:`Backend`).

Nothing outside this package branches on the storage format: the writer and
the reader speak only the protocol below, so Zarr and HDF5 stores hold the
same logical content.
"""

from __future__ import annotations

from pathlib import Path

from spikestore.backends._base import ArraySpec, Backend
from spikestore.errors import InvalidArgumentError

__all__ = ["ArraySpec", "Backend", "backend_name_for", "open_backend"]

_HDF5_SUFFIXES = (".h5", ".hdf5")


def backend_name_for(path: Path, backend: str | None) -> str:
    """Pick the backend from an explicit name or the path's suffix."""
    if backend is None:
        return "hdf5" if path.suffix.lower() in _HDF5_SUFFIXES else "zarr"
    if backend not in ("zarr", "hdf5"):
        raise InvalidArgumentError(f"backend must be 'zarr' or 'hdf5', not {backend!r}")
    return backend


def open_backend(path: Path, *, backend: str | None, writable: bool, durable: bool = False) -> Backend:
    """Open the backend for ``path`` (which must already exist when reading)."""
    name = backend_name_for(path, backend)
    if name == "hdf5":
        from spikestore.backends.hdf5 import HDF5Backend

        return HDF5Backend(path, writable=writable, durable=durable)
    from spikestore.backends._zarr import ZarrBackend

    return ZarrBackend(path, writable=writable, durable=durable)
