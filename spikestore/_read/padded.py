"""A stream as one array: records padded along the batch axis to the largest batch.

A stream stores a new segment whenever the record shape changes, which in
training happens at every epoch's last, smaller batch (batch 8, 8, 3). The
views that want one array per stream (``Stream.to_dask()``, the xarray
engine, ``Stream.padded[...]``) ask this module whether the segments fit
one array, and pad the records that are short on the batch axis.

The rule, in one place:

* the **batch axis** is the record axis named ``"batch"`` in
  :attr:`Stream.dims <spikestore.Stream.dims>` (monitors name it from their
  step mode: ``(time, batch, neuron...)`` or ``(batch, neuron...)``; records
  appended by hand have none until the writer gives a ``selection`` or the
  reader assigns ``s.dims``);
* a stream is **one array** when all its records share dtype and number of
  axes, and their shapes differ at most on the batch axis; the array's
  batch axis has the largest batch size, and each record's own size is its
  ``batch_size`` (:func:`batch_sizes`);
* padding is ``0`` (``False``) for integer and bool records and for streams
  whose every segment is bit-packed (spikes), ``NaN`` for other floating and
  complex records. A sum of spikes is right as it is; a mean needs
  ``batch_size`` (or ``nanmean`` for floats). :mod:`spikestore.analysis`
  reads the stored records and never sees padding.

Streams that differ on another axis (a layer that changed width, a value
recorded as a scalar before the first step) have no one-array view; their
segments are read one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spikestore._read import indexing
from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    from spikestore._read.segment import Block, Segment

__all__ = ["PaddedLayout", "PaddedRecords", "Records", "batch_axis", "batch_sizes", "pad_block", "padded_layout",
           "read_padded", "segment_batch_sizes", "why_not_one_array"]


class Records(Protocol):
    """What this module reads from a stream (:class:`spikestore.Stream` is one)."""

    @property
    def key(self) -> str: ...

    @property
    def dims(self) -> tuple[str, ...]: ...

    @property
    def segments(self) -> list[Segment]: ...

    def __len__(self) -> int: ...

    def record_positions(self, segment: Segment, start: int | None = None, stop: int | None = None) -> np.ndarray: ...

    def segment_rows(self, idx: np.ndarray) -> list[tuple[Segment, np.ndarray, np.ndarray]]: ...


@dataclass(frozen=True)
class PaddedLayout:
    """How the records of one stream fit one array.

    Attributes
    ----------
    shape
        The shape of one record of the array: the records' shape with the
        batch axis at its largest size.
    dtype
        The records' dtype (shared by every segment).
    batch_axis
        Position of the batch axis in a record; ``None`` when the stream has
        none (then every record already has :attr:`shape`).
    fill
        The value padding holds (``0``/``False`` or ``NaN``; see the module).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    batch_axis: int | None
    fill: Any

    def pad(self, records: np.ndarray) -> np.ndarray:
        """Records ``[k, *record_shape]`` padded to ``[k, *shape]`` (the same array when nothing is short)."""
        if records.shape[1:] == self.shape:
            return records
        out = np.full((len(records), *self.shape), self.fill, self.dtype)
        out[self.real(records.shape[1 + self.batch_axis])] = records  # type: ignore[operator]
        return out

    def real(self, size: int, lead: Any = slice(None)) -> tuple[Any, ...]:
        """The index of the real rows of records whose batch has ``size`` samples (``lead`` picks records)."""
        if self.batch_axis is None:
            return (lead,)
        return (lead, *(slice(None),) * self.batch_axis, slice(0, size))


def _fill(segments: list[Segment], dtype: np.dtype) -> Any:
    if dtype.kind in "biu" or all(s.encoding == "bits" for s in segments):
        return np.zeros((), dtype)[()]
    return np.full((), np.nan, dtype)[()]


def batch_axis(dims: tuple[str, ...]) -> int | None:
    """The batch axis of records whose axes are ``dims``: the one named ``"batch"`` (``None``: none)."""
    return dims.index("batch") if "batch" in dims else None


def padded_layout(stream: Records) -> PaddedLayout | None:
    """The one-array layout of ``stream``, or ``None`` when its records do not fit one array (see the module).

    A stream without records has none either.
    """
    segs = list(stream.segments)
    if not segs or len({(s.dtype, len(s.shape)) for s in segs}) > 1:
        return None
    axis = batch_axis(stream.dims)
    others = {tuple(d for k, d in enumerate(s.shape) if k != axis) for s in segs}
    if len(others) > 1:
        return None
    shape = list(segs[0].shape)
    if axis is not None:
        shape[axis] = max(s.shape[axis] for s in segs)
    return PaddedLayout(tuple(shape), segs[0].dtype, axis, _fill(segs, segs[0].dtype))


def why_not_one_array(stream: Records, what: str) -> InvalidArgumentError:
    """The error for ``what`` (a view) asked of a stream whose records do not fit one array."""
    shapes = ", ".join(f"{k}: {s.shape} {s.doc['dtype']}" for k, s in enumerate(stream.segments))
    if batch_axis(stream.dims) is None:
        why = (f"its records differ in shape or dtype and its dims {stream.dims} name no 'batch' axis "
               "(name it: assign s.dims, or give the writer Store.set_stream_info(key, "
               "selection={'step_mode': 's', 'batch_axis': 0}))")
    else:
        why = "its records differ in dtype, number of axes, or an axis other than the batch axis"
    return InvalidArgumentError(
        f"stream {stream.key!r} is not one array: {why}; segments: {shapes}. {what} needs one record "
        "layout: pick one segment with segment=k, or read records one by one with s[i]")


def segment_batch_sizes(stream: Records) -> list[int] | None:
    """The batch size of each segment's records (0 where a segment's records lack the axis), or ``None`` when
    the records have no batch axis. Read from the segments' shapes alone."""
    axis = batch_axis(stream.dims)
    if axis is None:
        return None
    return [seg.shape[axis] if len(seg.shape) > axis else 0 for seg in stream.segments]


def batch_sizes(stream: Records) -> np.ndarray | None:
    """The batch size of each record (``int64``), or ``None`` when the records have no batch axis."""
    sizes = segment_batch_sizes(stream)
    if sizes is None:
        return None
    out = np.zeros(len(stream), np.int64)
    for seg, size in zip(stream.segments, sizes, strict=True):
        if size:
            out[stream.record_positions(seg)] = size
    return out


def pad_block(block: Block, layout: PaddedLayout) -> np.ndarray:
    """The records of one stored block, padded (one dask task; both arguments pickle)."""
    return layout.pad(block.values())


def read_padded(stream: Records, layout: PaddedLayout, idx: np.ndarray) -> np.ndarray:
    """Records at positions ``idx`` (any order) as ``[len(idx), *layout.shape]``, padded."""
    out = np.full((len(idx), *layout.shape), layout.fill, layout.dtype)
    for seg, at, rows in stream.segment_rows(idx):
        contiguous = len(rows) and np.all(np.diff(rows) == 1)  # a contiguous run: read chunk by chunk
        recs = seg.read(int(rows[0]), int(rows[-1]) + 1) if contiguous else seg.take(rows)
        size = 0 if layout.batch_axis is None else seg.shape[layout.batch_axis]
        out[layout.real(size, at)] = recs
    return out


class PaddedRecords:
    """``s.padded[...]``: records of a stream as one array, padded along the batch axis.

    Takes the same keys as ``s[...]`` (an int, a slice, an int or bool array,
    and a tuple that indexes inside the records), and reads across segments
    whose batch sizes differ, where ``s[...]`` would refuse.
    """

    def __init__(self, stream: Records) -> None:
        self.stream = stream

    @property
    def layout(self) -> PaddedLayout:
        """The stream's :class:`PaddedLayout` (raises when its records do not fit one array)."""
        layout = padded_layout(self.stream)
        if layout is None:
            if not self.stream.segments:
                return PaddedLayout((), np.dtype(np.float32), None, np.float32(np.nan))
            raise why_not_one_array(self.stream, "s.padded[...]")
        return layout

    def __getitem__(self, item: Any) -> np.ndarray:
        s = self.stream
        if isinstance(item, tuple):  # records first, then inside them
            return indexing.inside(self.__getitem__, item)
        if indexing.is_position(item):
            one: np.ndarray = read_padded(s, self.layout, np.array([indexing.position(item, len(s), s.key)]))[0]
            return one
        return read_padded(s, self.layout, indexing.positions(item, len(s), s.key))

    def __repr__(self) -> str:
        return f"<padded records of {self.stream!r}>"
