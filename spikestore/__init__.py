"""spikestore: record what a spiking network does, on disk, while it trains.

Public names::

    spikestore.Store          write side (background writer thread)
    spikestore.FlightRecorder keep only the steps around a trigger (Store(flight_recorder=...))
    spikestore.open           read side (lazy, read-only)
    spikestore.verify         the problems of a store, one per line (``spikestore verify``)
    spikestore.monitor        SpikingJelly-compatible monitors
    spikestore.tensor_cache   float_spike_to_bool / bool_spike_to_float
    spikestore.analysis       firing rates, counts, ISIs, gradient norms (chunked)
    spikestore.plot           raster, rate heatmap, voltage traces, gradient norms
    spikestore.export         NWB, HDF5, Parquet, NPZ exporters
    spikestore.SpikestoreError and its subclasses (spikestore.errors)

Importing spikestore does not import torch.

The package follows the data flow; each layer imports only
from the layers above it in this list (``tools/check_imports.py`` checks)::

    errors, _failures the error tree; what each failure means for a store
    _atomic_files     write-then-replace for every published file
    _format/          names and paths, JSON documents, record layouts, dtypes
    codecs/           bit packing and its kernels, the codec table, chunk and spike codecs
    backends/         Zarr and HDF5 storage behind one protocol
    _read/            open, Run (a set of parts), Stream, Segment, the chunk and document reader
    _integrations/    dask views, the xarray engine and DataTree, dask.distributed workers
    _tools/           verify and summaries, built on the reader
    _write/           Store, capture, the writer thread, chunk assembly
    analysis, plot, export/, tensor_cache
    monitor/          the SpikingJelly-compatible monitors
    cli               the spikestore command
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from spikestore.errors import (
    ArrayNameTakenError,
    ChecksumError,
    DamagedStoreError,
    FlushTimeoutError,
    FormatError,
    InPlaceModificationError,
    InvalidArgumentError,
    InvalidValueError,
    MissingDependencyError,
    MonitorWarning,
    ReadOnlyError,
    RecordIndexError,
    SpikestoreError,
    StorageError,
    StoreClosedError,
    StoreExistsError,
    StoreInUseError,
    StoreNotFoundError,
    StreamFailedError,
    StreamNotFoundError,
    WriterError,
)

if TYPE_CHECKING:
    from spikestore import analysis, export, monitor, plot, tensor_cache
    from spikestore._read.run import Run, Stream, open
    from spikestore._tools.verify import verify
    from spikestore._write.flight import FlightRecorder
    from spikestore._write.store import Store

try:
    __version__ = version("spikestore")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"

__all__ = [
    "ArrayNameTakenError",
    "ChecksumError",
    "DamagedStoreError",
    "FlightRecorder",
    "FlushTimeoutError",
    "FormatError",
    "InPlaceModificationError",
    "InvalidArgumentError",
    "InvalidValueError",
    "MissingDependencyError",
    "MonitorWarning",
    "ReadOnlyError",
    "RecordIndexError",
    "Run",
    "SpikestoreError",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreExistsError",
    "StoreInUseError",
    "StoreNotFoundError",
    "Stream",
    "StreamFailedError",
    "StreamNotFoundError",
    "WriterError",
    "__version__",
    "analysis",
    "export",
    "monitor",
    "open",
    "plot",
    "tensor_cache",
    "verify",
]

# Heavy modules load on first use, so `import spikestore` stays fast.
_LAZY = {
    "Store": ("_write.store", "Store"),
    "FlightRecorder": ("_write.flight", "FlightRecorder"),
    "open": ("_read.run", "open"),
    "verify": ("_tools.verify", "verify"),
    "Run": ("_read.run", "Run"),
    "Stream": ("_read.run", "Stream"),
    "monitor": ("monitor", None),
    "tensor_cache": ("tensor_cache", None),
    "analysis": ("analysis", None),
    "plot": ("plot", None),
    "export": ("export", None),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'spikestore' has no attribute {name!r}") from None
    mod = import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
