"""Lazy dask and xarray views of a stream: ``Stream.to_dask()`` and ``Stream.to_xarray()``.

A stream becomes one dask array with one task per stored chunk, cut by the
read side's one chunk iterator (:func:`~spikestore._read.segment.iter_blocks`),
so building a graph reads nothing and computing it reads each chunk once;
its tasks carry references to their blocks, not chunks or opened runs, so
a ``dask.distributed`` worker (or a process pool) opens the store itself
(:mod:`spikestore._read.distributed`);
records with a smaller batch are padded by the rule of
:mod:`spikestore._read.padded`. The ``engine="spikestore"``
backend (:mod:`spikestore._read.xarray_engine`) labels its variables with the
same attributes and coordinates. dask and xarray are imported when a view is
built, not with this module.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from spikestore._read.distributed import BlockRef, pad_ref
from spikestore._read.padded import PaddedLayout, padded_layout, why_not_one_array
from spikestore._read.segment import iter_blocks
from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    import xarray as xr

    from spikestore._read.segment import Segment
    from spikestore._read.stream import Stream

__all__ = ["original_indices", "plain_attrs", "segment_to_dask", "stream_to_dask", "stream_to_xarray"]


# -- dask ---------------------------------------------------------------------------
def _to_dask(stream: Stream, segs: list[Segment], layout: PaddedLayout) -> Any:
    """Segments ``segs`` of ``stream`` as one dask array: one task per stored chunk, padded by ``layout``."""
    import dask.array as da
    from dask.base import tokenize

    run = stream.run
    name = "spikestore-" + tokenize(str(run.path), run.doc["created"], stream.key,
                                    [(s.doc["array"], s.count) for s in segs], layout)
    blocks = list(iter_blocks(segs))  # one per stored chunk: a task never reads two
    tail = (0,) * len(layout.shape)
    # A BlockRef reads through this run here, and pickles as a reference that a
    # worker process reopens (spikestore._read.distributed): no chunk bytes travel.
    graph = {(name, k, *tail): (pad_ref, BlockRef(b), layout) for k, b in enumerate(blocks)}
    meta = np.empty((0,) * (1 + len(layout.shape)), layout.dtype)
    return da.Array(graph, name, (tuple(len(b) for b in blocks), *((d,) for d in layout.shape)), meta=meta)


def segment_to_dask(seg: Segment) -> Any:
    """A segment as a dask array whose chunks are exactly the stored chunks.

    The graph holds one task per stored chunk and nothing is read to build
    it. The task name depends on the store, the stream, the segment and its
    committed count, so a refreshed, longer segment is a different array.
    """
    return _to_dask(seg.stream, [seg], PaddedLayout(seg.shape, seg.dtype, None, None))


def _segment(stream: Stream, segment: int) -> Segment:
    segs = stream.segments
    if not -len(segs) <= segment < len(segs):
        raise InvalidArgumentError(
            f"stream {stream.key!r} has {len(segs)} segment(s); segment={segment} is out of range")
    return segs[segment]


def stream_to_dask(stream: Stream, segment: int | None = None) -> Any:
    """Implementation of :meth:`spikestore.Stream.to_dask`: the whole stream, padded (or one segment)."""
    if segment is not None:
        return segment_to_dask(_segment(stream, segment))
    if not stream.segments:
        import dask.array as da

        return da.zeros((0,), np.float32)
    layout = padded_layout(stream)
    if layout is None:
        raise why_not_one_array(stream, "to_dask()")
    return _to_dask(stream, list(stream.segments), layout)


# -- labels ---------------------------------------------------------------------------
def original_indices(stream: Stream, shape: tuple[int, ...], dims: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The layer's own batch/neuron indices along the axes of records of ``shape``, where a monitor
    recorded a subset (the padded shape labels the rows of every record)."""
    return stream.layout.original_indices(shape, dims)


def plain_attrs(stream: Stream, segs: list[Segment]) -> dict[str, Any]:
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


def record_coords(stream: Stream, start: int, stop: int) -> dict[str, np.ndarray]:
    """Per-record coordinates of records ``start:stop``: ``step``, ``call``, ``rank`` and, with a batch axis,
    ``batch_size`` (DESIGN §9's coordinates along the record dimension)."""
    out = {"step": stream.steps[start:stop], "call": stream.calls[start:stop], "rank": stream.ranks[start:stop]}
    sizes = stream.batch_sizes
    if sizes is not None:
        out["batch_size"] = sizes[start:stop]
    return out


def stream_to_xarray(stream: Stream, segment: int | None = None) -> xr.DataArray:
    """Implementation of :meth:`spikestore.Stream.to_xarray`."""
    import xarray as xr

    if segment is None and not stream.segments:
        return xr.DataArray(np.zeros(0, np.float32), dims=("record",), name=stream.key,
                            coords={"record": np.zeros(0, np.int64), "step": ("record", np.zeros(0, np.int64))})
    if segment is not None:
        seg = _segment(stream, segment)
        segs, shape, dims = [seg], seg.shape, seg.dims
    else:
        segs, dims = list(stream.segments), stream.dims
        layout = padded_layout(stream)
        if layout is None:
            raise why_not_one_array(stream, "to_xarray()")
        shape = layout.shape
    data = stream_to_dask(stream, segment)
    lo, hi = segs[0].start, segs[-1].stop
    coords: dict[str, Any] = {"record": np.arange(lo, hi)}
    coords.update({k: ("record", v) for k, v in record_coords(stream, lo, hi).items()})
    coords.update({dim: (dim, ix) for dim, ix in original_indices(stream, shape, dims).items()})
    return xr.DataArray(data, dims=("record", *dims), coords=coords, name=stream.key,
                        attrs=plain_attrs(stream, segs))
