"""Lazy dask and xarray views of a store, and the ``engine="spikestore"`` backend.

``xarray.open_dataset(path, engine="spikestore")`` gives one lazy variable per
stream segment (segments differ in record shape, dtype or encoding, so they
cannot share one array). Opening reads the JSON documents only; a stored
chunk is read when values inside it are asked for, through the same
:class:`~spikestore.reader.Segment` code as ``run[key][i]``, so Zarr and HDF5
stores behave the same.

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

    from spikestore._read.run import Run, Segment, Stream

__all__ = ["SpikestoreBackendEntrypoint", "open_dataset", "segment_to_dask", "stream_to_xarray"]


# -- dask -----------------------------------------------------------------------------
def _dask_block(seg: Segment, chunk: int, length: int) -> np.ndarray:
    return seg.decode_rows(seg.chunk(chunk)[:length])


def segment_to_dask(seg: Segment) -> Any:
    """A segment as a dask array whose chunks are exactly the stored chunks.

    The graph holds one task per stored chunk and nothing is read to build
    it. The task name depends on the store, the stream, the segment and its
    committed count, so a refreshed, longer segment is a different array.
    """
    import dask.array as da
    from dask.base import tokenize

    run = seg.stream._run
    name = "spikestore-" + tokenize(str(run.path), run.doc["created"], seg.stream.key,
                                    seg.doc["array"], seg.count)
    rpc = seg.chunk_records
    lengths = tuple(min(rpc, seg.count - c * rpc) for c in range(seg.nchunks))
    tail = (0,) * len(seg.shape)
    graph = {(name, c, *tail): (_dask_block, seg, c, k) for c, k in enumerate(lengths)}
    meta = np.empty((0,) * (1 + len(seg.shape)), seg.dtype)
    return da.Array(graph, name, (lengths, *((d,) for d in seg.shape)), meta=meta)


# -- shared pieces --------------------------------------------------------------------
def _selection_coords(dims: tuple[str, ...], shape: tuple[int, ...],
                      selection: dict[str, Any] | None) -> dict[str, Any]:
    """Original batch/neuron indices as coordinates, where a monitor recorded a subset."""
    coords: dict[str, Any] = {}
    for dim, field in (("batch", "batch"), ("neuron", "neurons")):
        ix = (selection or {}).get(field)
        if dim not in dims or ix is None:
            continue
        if isinstance(ix, dict):
            start, stop, step = ix["slice"]
            if stop is None or (start or 0) < 0 or stop < 0:
                continue  # the layer's size is not recorded, so open ends stay unlabelled
            ix = list(range(start or 0, stop, step or 1))
        if len(ix) == shape[dims.index(dim)]:
            coords[dim] = (dim, np.asarray(ix, dtype=np.int64))
    return coords


def _attrs(stream: Stream, segs: list[Segment]) -> dict[str, Any]:
    """Plain attributes (strings and numbers, so the result can be written to netCDF)."""
    attrs: dict[str, Any] = {
        "stream": stream.key, "quantity": stream.quantity, "layer": stream.layer,
        "dtype": ",".join(sorted({s.doc["dtype"] for s in segs})),
        "encoding": ",".join(sorted({s.encoding for s in segs})),
        "segments": ",".join(s.doc["array"] for s in segs),
        "selection": json.dumps(stream.selection),
    }
    if "monitor" in stream.attrs:
        attrs["monitor"] = str(stream.attrs["monitor"])
    return attrs


def stream_to_xarray(stream: Stream, segment: int | None = None) -> xr.DataArray:
    """Implementation of :meth:`spikestore.reader.Stream.to_xarray`."""
    import dask.array as da
    import xarray as xr

    from spikestore.errors import InvalidArgumentError

    segs = list(stream.segments)
    if segment is not None:
        if not -len(segs) <= segment < len(segs):
            raise InvalidArgumentError(
                f"stream {stream.key!r} has {len(segs)} segment(s); segment={segment} is out of range")
        segs = [segs[segment]]
    elif len({(s.shape, s.dtype) for s in segs}) > 1:
        shapes = ", ".join(f"{k}: {s.shape} {s.doc['dtype']}" for k, s in enumerate(segs))
        raise InvalidArgumentError(
            f"stream {stream.key!r} has segments with different record shapes or dtypes ({shapes}); "
            "pick one with to_xarray(segment=k), or open the store with "
            "xarray.open_dataset(path, engine='spikestore'), which has one variable per segment")
    if not segs:
        return xr.DataArray(np.zeros(0, np.float32), dims=("record",), name=stream.key,
                            coords={"record": np.zeros(0, np.int64), "step": ("record", np.zeros(0, np.int64))})
    arrays = [segment_to_dask(s) for s in segs]
    data = arrays[0] if len(arrays) == 1 else da.concatenate(arrays)
    dims = ("record", *segs[0].dims)
    lo, hi = segs[0].start, segs[-1].stop
    coords: dict[str, Any] = {"record": np.arange(lo, hi), "step": ("record", stream.steps[lo:hi]),
                              "call": ("record", stream.calls[lo:hi])}
    coords.update(_selection_coords(segs[0].dims, segs[0].shape, stream.selection))
    return xr.DataArray(data, dims=dims, coords=coords, name=stream.key, attrs=_attrs(stream, segs))


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
        return np.asarray(self.stream._index_array(self.name)[self.start:self.stop][key])


def _variables(run: Run, streams: Iterable[str] | None,
               drop: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    import xarray as xr

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
            attrs = _attrs(stream, [seg]) | {"first_record": seg.start}
            data_vars[name] = xr.Variable(dims, indexing.LazilyIndexedArray(SegmentArray(seg)), attrs=attrs,
                                          encoding={"preferred_chunks": preferred})
            for index in ("step", "call"):
                coords[f"{name}:{index}"] = xr.Variable(
                    dims[:1], indexing.LazilyIndexedArray(IndexArray(stream, index, seg.start, seg.stop)))
            short = seg.dims
            for dim, (_, values) in _selection_coords(short, seg.shape, stream.selection).items():
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
