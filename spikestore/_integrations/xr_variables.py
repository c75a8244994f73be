"""Lazy xarray variables of a stream: what the ``engine="spikestore"`` dataset and DataTree hold.

:func:`stream_variables` turns one stream into xarray variables whose values
are read only when asked for: one padded variable when the stream's records
fit one array (:mod:`spikestore._read.padded`), else one per segment, with
the coordinates of :func:`~spikestore._integrations.dask_views.record_coords`
(``step``, ``call``, ``rank``, ``batch_size``) along the record dimension.
:mod:`spikestore._integrations.xarray_engine` (the flat dataset) and
:mod:`spikestore._integrations.datatree` (the tree) name and group them.

Like the engine, this module imports only numpy and xarray at the top.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
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


def _outer_indexed(key: indexing.ExplicitIndexer, shape: tuple[int, ...],
                   getitem: Callable[[tuple[Any, ...]], np.ndarray]) -> np.ndarray:
    """xarray's key turned into one outer-indexing key per axis, and ``getitem`` of it."""
    out: np.ndarray = indexing.explicit_indexing_adapter(key, shape, indexing.IndexingSupport.OUTER, getitem)
    return out


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
        return _outer_indexed(key, self.shape, self._getitem)

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
        return _outer_indexed(key, self.shape, self._getitem)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        from spikestore._read.padded import read_padded

        n, first = self.shape[0], key[0]
        one = isinstance(first, (int, np.integer))
        idx = np.arange(n)[first] if isinstance(first, slice) else np.asarray(first, np.int64).reshape(-1)
        recs = read_padded(self.stream, self.layout, np.where(idx < 0, idx + n, idx))
        return _outer(recs[0] if one else recs, key[1:], 0 if one else 1)


class IndexArray(BackendArray):
    """The records at ``positions`` of a stream's ``step`` or ``call`` index, read on first use."""

    def __init__(self, stream: Stream, name: str, positions: np.ndarray) -> None:
        self.stream, self.name, self.positions = stream, name, positions
        self.shape = (len(positions),)
        self.dtype = np.dtype({"step": "int64", "call": "int32"}[name])

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return _outer_indexed(key, self.shape, self._getitem)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        return np.asarray(self.stream.index(self.name)[self.positions][key])


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

    from spikestore._integrations.dask_views import original_indices, plain_attrs, record_coords
    from spikestore._read.padded import padded_layout
    from spikestore._read.segment import iter_blocks

    drop = set(drop)
    layout = padded_layout(stream)
    parts: list[tuple[str, list[Segment], np.ndarray, tuple[int, ...], tuple[str, ...], BackendArray]]
    if layout is not None:
        segs = list(stream.segments)
        every = np.arange(len(stream), dtype=np.int64)
        parts = [(name, segs, every, layout.shape, stream.dims, StreamArray(stream, layout))]
    else:
        parts = [(f"{name}#{k}", [seg], stream.record_positions(seg), seg.shape, seg.dims, SegmentArray(seg))
                 for k, seg in enumerate(stream.segments)]
        prefix = prefix or len(parts) > 1
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for var, segs, positions, shape, names, array in parts:
        if var in drop:
            continue
        label = (lambda d, v=var: f"{v}:{d}") if prefix else (lambda d: d)
        dims = tuple(label(d) for d in ("record", *names))
        in_store = np.concatenate([stream.record_positions(s) for s in segs])
        encoding = {}
        if np.array_equal(in_store, positions):  # stored chunks follow the variable's records
            encoding["preferred_chunks"] = {dims[0]: tuple(len(b) for b in iter_blocks(segs)),
                                            **dict(zip(dims[1:], shape, strict=True))}
        attrs = plain_attrs(stream, segs) | {"first_record": int(positions[0])}
        data_vars[var] = xr.Variable(dims, indexing.LazilyIndexedArray(array), attrs=attrs, encoding=encoding)
        def lazy(name: str, at: np.ndarray = positions) -> Any:  # read when the values are asked for
            return indexing.LazilyIndexedArray(IndexArray(stream, name, at))

        for name, values in record_coords(stream, positions, lazy).items():
            coords[label(name)] = xr.Variable(dims[:1], values)
        for dim, values in original_indices(stream, shape, names).items():
            coords[label(dim)] = xr.Variable((label(dim),), values)
    return data_vars, coords


def root_attrs(run: Run) -> dict[str, Any]:
    """The store's attributes as plain values (the dataset's, and the root node's of a DataTree)."""
    return {"path": str(run.path), "created": run.doc["created"], "format_version": run.doc["format_version"],
            "writer_status": run.writer["status"], "metadata": json.dumps(run.metadata)}
