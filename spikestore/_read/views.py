"""Lazy dask and xarray views of a stream: ``Stream.to_dask()`` and ``Stream.to_xarray()``.

A segment becomes a dask array with one task per stored chunk, cut by the
read side's one chunk iterator (:meth:`Segment.blocks
<spikestore._read.segment.Segment.blocks>`), so building a graph reads
nothing and computing it reads each chunk once. The ``engine="spikestore"``
backend (:mod:`spikestore._read.xarray_engine`) labels its variables with the
same attributes and coordinates. dask and xarray are imported when a view is
built, not with this module.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    import xarray as xr

    from spikestore._read.segment import Block, Segment
    from spikestore._read.stream import Stream

__all__ = ["original_indices", "plain_attrs", "segment_to_dask", "stream_to_xarray"]


# -- dask ---------------------------------------------------------------------------
def _dask_block(block: Block) -> np.ndarray:
    return block.values()


def segment_to_dask(seg: Segment) -> Any:
    """A segment as a dask array whose chunks are exactly the stored chunks.

    The graph holds one task per stored chunk and nothing is read to build
    it. The task name depends on the store, the stream, the segment and its
    committed count, so a refreshed, longer segment is a different array.
    """
    import dask.array as da
    from dask.base import tokenize

    run = seg.stream.run
    name = "spikestore-" + tokenize(str(run.path), run.doc["created"], seg.stream.key,
                                    seg.doc["array"], seg.count)
    blocks = list(seg.blocks())  # one per stored chunk
    lengths = tuple(len(b) for b in blocks)
    tail = (0,) * len(seg.shape)
    graph = {(name, k, *tail): (_dask_block, b) for k, b in enumerate(blocks)}
    meta = np.empty((0,) * (1 + len(seg.shape)), seg.dtype)
    return da.Array(graph, name, (lengths, *((d,) for d in seg.shape)), meta=meta)


# -- labels ---------------------------------------------------------------------------
def original_indices(stream: Stream, seg: Segment) -> dict[str, np.ndarray]:
    """The layer's own batch/neuron indices along a segment's axes, where a monitor recorded a subset."""
    return stream.layout.original_indices(seg.shape, seg.dims)


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


def stream_to_xarray(stream: Stream, segment: int | None = None) -> xr.DataArray:
    """Implementation of :meth:`spikestore.Stream.to_xarray`."""
    import dask.array as da
    import xarray as xr

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
    coords.update({dim: (dim, ix) for dim, ix in original_indices(stream, segs[0]).items()})
    return xr.DataArray(data, dims=dims, coords=coords, name=stream.key, attrs=plain_attrs(stream, segs))
