"""Lazy xarray variables of a stream: what the ``engine="spikestore"`` dataset and DataTree hold.

:func:`stream_variables` turns one stream into xarray variables whose values
are read only when asked for: one padded variable when the stream's records
fit one array (:mod:`spikestore._read.padded`), else one per segment, with
``step``, ``call`` and ``batch_size`` coordinates along the record
dimension. :mod:`spikestore._read.xarray_engine` (the flat dataset) and
:mod:`spikestore._read.datatree` (the tree) name and group them.

Like the engine, this module imports only numpy and xarray at the top.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

if TYPE_CHECKING:
    from spikestore._read.padded import PaddedLayout
    from spikestore._read.run import Run
    from spikestore._read.segment import Segment
    from spikestore._read.stream import Stream

__all__ = ["IndexArray", "SegmentArray", "StreamArray", "root_attrs", "stream_variables"]


def _outer(recs: np.ndarray, rest: tuple[Any, ...], offset: int) -> np.ndarray:
    """Outer indexing of the record axes, last axis first so earlier positions stay put."""
    for ax in range(len(rest) - 1, -1, -1):
        k = rest[ax]
        if not (isinstance(k, slice) and k == slice(None)):
            recs = recs[(slice(None),) * (ax + offset) + (k,)]
    return recs


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
        return _outer(recs, rest, 0 if isinstance(first, (int, np.integer)) else 1)


class StreamArray(BackendArray):
    """A whole stream as one array, padded along the batch axis (:mod:`spikestore._read.padded`)."""

    def __init__(self, stream: Stream, layout: PaddedLayout) -> None:
        self.stream, self.layout = stream, layout
        self.shape = (len(stream), *layout.shape)
        self.dtype = layout.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        from spikestore._read.padded import read_padded

        n, first = self.shape[0], key[0]
        one = isinstance(first, (int, np.integer))
        idx = np.arange(n)[first] if isinstance(first, slice) else np.asarray(first, np.int64).reshape(-1)
        recs = read_padded(self.stream, self.layout, np.where(idx < 0, idx + n, idx))
        return _outer(recs[0] if one else recs, key[1:], 0 if one else 1)


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


def stream_variables(stream: Stream, name: str, *, prefix: bool = True,
                     drop: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """The variables and coordinates of one stream, named ``name``.

    One variable when the records fit one array (padded along the batch
    axis), else one per segment, ``"<name>#k"``. Dimensions and coordinates
    are ``"<variable>:<dim>"`` (``prefix``, needed when several variables
    share a dataset), else plain (``record``, ``batch``, ``step``...).
    Variables named in ``drop`` are left out.
    """
    import xarray as xr

    from spikestore._read.padded import padded_layout
    from spikestore._read.segment import iter_blocks
    from spikestore._read.views import original_indices, plain_attrs

    drop = set(drop)
    from spikestore._read.ranked import RankedStream

    if isinstance(stream, RankedStream):
        return _ranked_variables(stream, name, prefix=prefix, drop=drop)
    layout = padded_layout(stream)
    if layout is not None:
        parts = [(name, list(stream.segments), layout.shape, stream.dims, StreamArray(stream, layout))]
    else:
        parts = [(f"{name}#{k}", [seg], seg.shape, seg.dims, SegmentArray(seg))
                 for k, seg in enumerate(stream.segments)]
        prefix = prefix or len(parts) > 1
    sizes = stream.batch_sizes
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for var, segs, shape, names, array in parts:
        if var in drop:
            continue
        label = (lambda d, v=var: f"{v}:{d}") if prefix else (lambda d: d)
        dims = tuple(label(d) for d in ("record", *names))
        lo, hi = segs[0].start, segs[-1].stop
        preferred = {dims[0]: tuple(len(b) for b in iter_blocks(segs)), **dict(zip(dims[1:], shape, strict=True))}
        attrs = plain_attrs(stream, segs) | {"first_record": lo}
        data_vars[var] = xr.Variable(dims, indexing.LazilyIndexedArray(array), attrs=attrs,
                                     encoding={"preferred_chunks": preferred})
        for index in ("step", "call"):
            coords[label(index)] = xr.Variable(
                dims[:1], indexing.LazilyIndexedArray(IndexArray(stream, index, lo, hi)))
        coords[label("rank")] = xr.Variable(dims[:1], stream.ranks[lo:hi])
        if sizes is not None:
            coords[label("batch_size")] = xr.Variable(dims[:1], sizes[lo:hi])
        for dim, values in original_indices(stream, shape, names).items():
            coords[label(dim)] = xr.Variable((label(dim),), values)
    return data_vars, coords


def _ranked_variables(stream: Any, name: str, *, prefix: bool,
                      drop: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The variable of a stream merged over ranks (:mod:`spikestore._read.ranked`): its dask-backed
    ``to_xarray()`` data, with ``step``, ``call``, ``rank`` and ``batch_size`` along the record dimension,
    the layer's own batch/neuron indices along the record axes, and the attributes of a plain stream's
    variable (over every rank's segments) plus ``ranks``."""
    import xarray as xr

    from spikestore._read.views import original_indices, plain_attrs

    if name in drop:
        return {}, {}
    da = stream.to_xarray()
    label = (lambda d: f"{name}:{d}") if prefix else (lambda d: d)
    dims = tuple(label(d) for d in da.dims)
    coords = {label(c): xr.Variable(dims[:1], da.coords[c].values)
              for c in ("step", "call", "rank", "batch_size") if c in da.coords}
    for dim, values in original_indices(stream, da.shape[1:], stream.dims).items():
        coords[label(dim)] = xr.Variable((label(dim),), values)
    attrs = plain_attrs(stream, stream.all_segments) | {"ranks": da.attrs["ranks"]}
    return {name: xr.Variable(dims, da.data, attrs=attrs)}, coords


def root_attrs(run: Run) -> dict[str, Any]:
    """The store's attributes as plain values (the dataset's, and the root node's of a DataTree)."""
    return {"path": str(run.path), "created": run.doc["created"], "format_version": run.doc["format_version"],
            "writer_status": run.writer["status"], "metadata": json.dumps(run.metadata)}
