"""The ``engine="spikestore"`` backend of ``xarray.open_dataset``.

``xarray.open_dataset(path, engine="spikestore")`` gives one lazy variable per
stream segment (segments differ in record shape, dtype or encoding, so they
cannot share one array). Opening reads the JSON documents only; a stored
chunk is read when values inside it are asked for, through the same
:class:`~spikestore._read.segment.Segment` code as ``run[key][i]``, so Zarr and HDF5
stores behave the same. With ``chunks={}`` the dask chunks are the stored
chunks. ``Stream.to_xarray()`` and ``Stream.to_dask()`` live in
:mod:`spikestore._read.views`, which labels variables the same way.

xarray imports every installed engine whenever it opens any file, so this
module imports only numpy and xarray at the top (not torch, zarr or the rest
of spikestore).

Naming in the dataset: a stream with one segment is the variable
``"<quantity>/<layer>"``; a stream with several gives ``"<key>#0"``,
``"<key>#1"``, ... in record order. Each variable has its own dimensions,
prefixed with its name (``"output/2:record"``, ``"output/2:time"``,
``"output/2:batch"``, ``"output/2:neuron"``), because sizes differ between
variables (record counts, batch sizes, layer widths); ``"<name>:step"`` and
``"<name>:call"`` are lazy coordinates along the record dimension.
``Stream.to_xarray()`` gives one stream with plain names (``record``,
``time``, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

if TYPE_CHECKING:
    import xarray as xr

    from spikestore._read.run import Run
    from spikestore._read.segment import Segment
    from spikestore._read.stream import Stream

__all__ = ["SpikestoreBackendEntrypoint", "open_dataset"]


# -- the xarray backend ---------------------------------------------------------------
class SegmentArray(BackendArray):
    """One segment, indexed lazily by xarray (outer indexing: one key per axis)."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.shape = (segment.count, *segment.shape)
        self.dtype = segment.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        seg, n = self.segment, self.shape[0]
        first, rest = key[0], key[1:]
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            recs = seg.read(start, max(start, stop)) if step == 1 else seg.take(np.arange(start, stop, step))
        elif isinstance(first, (int, np.integer)):
            recs = seg.take(np.array([int(first) % n]))[0]
        else:
            rows = np.asarray(first, dtype=np.int64)
            recs = seg.take(np.where(rows < 0, rows + n, rows))
        # Outer indexing of the record axes, last axis first so earlier positions stay put.
        offset = 0 if isinstance(first, (int, np.integer)) else 1
        for ax in range(len(rest) - 1, -1, -1):
            k = rest[ax]
            if not (isinstance(k, slice) and k == slice(None)):
                recs = recs[(slice(None),) * (ax + offset) + (k,)]
        return recs


class IndexArray(BackendArray):
    """Records ``start:stop`` of a stream's ``step`` or ``call`` index, read on first use."""

    def __init__(self, stream: Stream, name: str, start: int, stop: int) -> None:
        self.stream, self.name, self.start, self.stop = stream, name, start, stop
        self.shape = (stop - start,)
        self.dtype = np.dtype({"step": "int64", "call": "int32"}[name])

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        return np.asarray(self.stream.index(self.name)[self.start:self.stop][key])


def _variables(run: Run, streams: Iterable[str] | None,
               drop: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    import xarray as xr

    from spikestore._read.views import original_indices, plain_attrs

    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for key in run.streams if streams is None else streams:
        stream = run[key]
        for k, seg in enumerate(stream.segments):
            name = key if len(stream.segments) == 1 else f"{key}#{k}"
            if name in drop:
                continue
            dims = tuple(f"{name}:{d}" for d in ("record", *seg.dims))
            preferred = {dims[0]: seg.chunk_records, **dict(zip(dims[1:], seg.shape, strict=True))}
            attrs = plain_attrs(stream, [seg]) | {"first_record": seg.start}
            data_vars[name] = xr.Variable(dims, indexing.LazilyIndexedArray(SegmentArray(seg)), attrs=attrs,
                                          encoding={"preferred_chunks": preferred})
            for index in ("step", "call"):
                coords[f"{name}:{index}"] = xr.Variable(
                    dims[:1], indexing.LazilyIndexedArray(IndexArray(stream, index, seg.start, seg.stop)))
            for dim, values in original_indices(stream, seg).items():
                coords[f"{name}:{dim}"] = xr.Variable((f"{name}:{dim}",), values)
    return data_vars, coords


def open_dataset(path: str | os.PathLike[str], *, streams: Iterable[str] | None = None,
                 drop_variables: Iterable[str] | None = None, backend: str | None = None) -> xr.Dataset:
    """What ``xarray.open_dataset(path, engine="spikestore")`` returns.

    Parameters
    ----------
    streams
        Stream keys to include (default: all).
    drop_variables
        Variable names to leave out (``"output/2"`` or ``"output/2#1"``).
    backend
        ``"zarr"`` or ``"hdf5"``; by default chosen from the path's suffix.
    """
    import xarray as xr

    from spikestore._read.run import open as open_run

    run = open_run(path, backend=backend)
    try:
        data_vars, coords = _variables(run, streams, set(drop_variables or ()))
    except BaseException:
        run.close()
        raise
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "path": str(run.path), "created": run.doc["created"], "format_version": run.doc["format_version"],
        "writer_status": run.writer["status"], "metadata": json.dumps(run.metadata)})
    ds.set_close(run.close)
    return ds


class SpikestoreBackendEntrypoint(BackendEntrypoint):
    """``xarray.open_dataset(path, engine="spikestore")``: a store as lazy variables."""

    description = "Open spikestore stores (Zarr or HDF5) lazily: one variable per stream segment"
    url = "https://spikestore.invalid/docs/reading.html"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "streams", "backend")

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: Iterable[str] | None = None,
                     streams: Iterable[str] | None = None, backend: str | None = None) -> xr.Dataset:
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            from spikestore.errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"engine='spikestore' opens a store by path, not a {type(filename_or_obj).__name__}")
        return open_dataset(filename_or_obj, streams=streams, drop_variables=drop_variables,
                            backend=backend)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        # Called for every file xarray opens without an engine: cheap, never raises.
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        meta = Path(filename_or_obj) / "zarr.json"
        try:
            if not meta.is_file():
                return False
            return "spikestore" in json.loads(meta.read_text()).get("attributes", {})
        except (OSError, ValueError, AttributeError):
            return False
