"""Lazy dask and xarray views of a stream: ``Stream.to_dask()`` and ``Stream.to_xarray()``.

A stream becomes one dask array with one task per stored chunk, cut by the
read side's one chunk iterator (:func:`~spikestore._read.segment.iter_blocks`),
so building a graph reads nothing and computing it reads each chunk once.
Its tasks carry their blocks, which pickle as references (the stream's
reopening recipe, the segment's document, the records), so a
``dask.distributed`` worker (or a process pool) opens the store itself
(:mod:`spikestore._integrations.distributed`). Records with a smaller batch
are padded by the rule of :mod:`spikestore._read.padded`. The blocks of a
stream of several parts come part by part; the array puts them in the
stream's record order. The ``engine="spikestore"`` backend
(:mod:`spikestore._integrations.xarray_engine`) labels its variables with
the same attributes and coordinates (:func:`record_coords`,
:func:`plain_attrs`). dask and xarray are imported when a view is built.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spikestore._integrations.distributed import BlockRef, pad_ref
from spikestore._read.padded import PaddedLayout, Records, padded_layout, why_not_one_array
from spikestore._read.segment import iter_blocks
from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    import dask.array
    import xarray as xr

    from spikestore._format.layout import RecordLayout
    from spikestore._read.segment import Segment

__all__ = ["ViewedStream", "original_indices", "plain_attrs", "record_coords", "segment_to_dask", "stream_to_dask",
           "stream_to_xarray"]


class ViewedStream(Records, Protocol):
    """What the views read from a stream (:class:`spikestore.Stream` is one)."""

    @property
    def quantity(self) -> str: ...

    @property
    def layer(self) -> str: ...

    @property
    def layout(self) -> RecordLayout: ...

    @property
    def selection(self) -> dict[str, Any] | None: ...

    @property
    def attrs(self) -> dict[str, Any]: ...

    def index(self, name: str) -> np.ndarray: ...

    @property
    def ranks(self) -> np.ndarray: ...

    @property
    def batch_sizes(self) -> np.ndarray | None: ...

    def __reduce__(self) -> str | tuple[Any, ...]: ...


# -- dask ---------------------------------------------------------------------------
def _to_dask(stream: ViewedStream, segs: list[Segment], layout: PaddedLayout) -> dask.array.Array:
    """Segments ``segs`` of ``stream`` as one dask array: one task per stored chunk, padded by ``layout``,
    in the order of ``segs``."""
    import dask.array as da
    from dask.base import tokenize

    name = "spikestore-" + tokenize(stream.__reduce__(), stream.key,
                                    [(s.rank, s.doc["array"], s.count) for s in segs], layout)
    blocks = list(iter_blocks(segs))  # one per stored chunk: a task never reads two
    tail = (0,) * len(layout.shape)
    # A BlockRef reads through this run here, and pickles as a reference that a worker process
    # reopens (spikestore._integrations.distributed): no chunk bytes travel.
    graph = {(name, k, *tail): (pad_ref, BlockRef(b), layout) for k, b in enumerate(blocks)}
    meta = np.empty((0,) * (1 + len(layout.shape)), layout.dtype)
    chunks = (tuple(len(b) for b in blocks), *((d,) for d in layout.shape))
    arr: dask.array.Array = da.Array(graph, name, chunks, meta=meta)  # type: ignore[no-untyped-call]
    return arr


def segment_to_dask(seg: Segment, stream: ViewedStream) -> dask.array.Array:
    """Segment ``seg`` of ``stream`` as a dask array whose chunks are exactly the stored chunks.

    The graph holds one task per stored chunk and nothing is read to build
    it. The task name depends on the store, the stream, the segment and its
    committed count, so a refreshed, longer segment is a different array.
    """
    return _to_dask(stream, [seg], PaddedLayout(seg.shape, seg.dtype, None, None))


def _segment(stream: ViewedStream, segment: int) -> Segment:
    segs = stream.segments
    if not -len(segs) <= segment < len(segs):
        raise InvalidArgumentError(
            f"stream {stream.key!r} has {len(segs)} segment(s); segment={segment} is out of range")
    return segs[segment]


def _stored_order(stream: ViewedStream) -> np.ndarray:
    """Stream positions of the records in stored order (segment by segment, part by part)."""
    segs = stream.segments
    return np.concatenate([stream.record_positions(s) for s in segs]) if segs else np.zeros(0, np.int64)


def stream_to_dask(stream: ViewedStream, segment: int | None = None) -> dask.array.Array:
    """Implementation of :meth:`spikestore.Stream.to_dask`: the whole stream, padded (or one segment)."""
    import dask.array as da

    if segment is not None:
        return segment_to_dask(_segment(stream, segment), stream)
    if not stream.segments:
        empty: dask.array.Array = da.zeros((0,), np.float32)
        return empty
    layout = padded_layout(stream)
    if layout is None:
        raise why_not_one_array(stream, "to_dask()")
    arr = _to_dask(stream, list(stream.segments), layout)
    stored = _stored_order(stream)
    if np.array_equal(stored, np.arange(len(stored))):
        return arr
    ordered: dask.array.Array = arr[np.argsort(stored, kind="stable")]  # several parts: into the stream's order
    return ordered


# -- labels ---------------------------------------------------------------------------
def original_indices(stream: ViewedStream, shape: tuple[int, ...], dims: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The layer's own batch/neuron indices along the axes of records of ``shape``, where a monitor
    recorded a subset (the padded shape labels the rows of every record)."""
    return stream.layout.original_indices(shape, dims)


def plain_attrs(stream: ViewedStream, segs: list[Segment]) -> dict[str, Any]:
    """Plain attributes (strings and numbers, so the result can be written to netCDF)."""
    attrs: dict[str, Any] = {
        "stream": stream.key, "quantity": stream.quantity, "layer": stream.layer,
        "dtype": ",".join(sorted({s.doc["dtype"] for s in segs})),
        "encoding": ",".join(sorted({s.encoding for s in segs})),
        "segments": ",".join(s.doc["array"] for s in segs),
        "ranks": ",".join(str(r) for r in dict.fromkeys(s.rank for s in segs)),
        "selection": json.dumps(stream.selection),
    }
    if "monitor" in stream.attrs:
        attrs["monitor"] = str(stream.attrs["monitor"])
    return attrs


def record_coords(stream: ViewedStream, positions: np.ndarray,
                  stored: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The coordinates along the record dimension of the records at ``positions``, the same in every
    view of a stream: ``step`` and ``call`` (the stored index arrays), ``rank`` and, when records have a
    batch axis, ``batch_size``.

    ``stored(name)`` gives the values of a stored index array (the xarray
    engine's lazy arrays); by default they are read.
    """
    out: dict[str, Any] = {name: stream.index(name)[positions] if stored is None else stored(name)
                           for name in ("step", "call")}
    out["rank"] = stream.ranks[positions]
    sizes = stream.batch_sizes
    if sizes is not None:
        out["batch_size"] = sizes[positions]
    return out


def stream_to_xarray(stream: ViewedStream, segment: int | None = None) -> xr.DataArray:
    """Implementation of :meth:`spikestore.Stream.to_xarray`."""
    import xarray as xr

    if segment is None and not stream.segments:
        return xr.DataArray(np.zeros(0, np.float32), dims=("record",), name=stream.key,
                            coords={"record": np.zeros(0, np.int64), "step": ("record", np.zeros(0, np.int64))})
    if segment is not None:
        seg = _segment(stream, segment)
        segs, shape, dims = [seg], seg.shape, seg.dims
        positions = stream.record_positions(seg)
    else:
        segs, dims = list(stream.segments), stream.dims
        layout = padded_layout(stream)
        if layout is None:
            raise why_not_one_array(stream, "to_xarray()")
        shape = layout.shape
        positions = np.arange(len(stream), dtype=np.int64)
    data = stream_to_dask(stream, segment)
    coords: dict[str, Any] = {"record": positions}
    coords.update({k: ("record", v) for k, v in record_coords(stream, positions).items()})
    coords.update({dim: (dim, ix) for dim, ix in original_indices(stream, shape, dims).items()})
    return xr.DataArray(data, dims=("record", *dims), coords=coords, name=stream.key,
                        attrs=plain_attrs(stream, segs))
