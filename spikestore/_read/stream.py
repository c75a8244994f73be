"""``run[key]``: one stream's records along axis 0, read lazily.

A :class:`Stream` knows its document, its segments and its index arrays
(step, call, time); it turns ``s[...]``, ``s.sel(...)`` and
``s.iter_chunks(...)`` into reads of its segments, and builds the torch,
dask and xarray views on them. Which positions a key picks is
:mod:`spikestore._read.indexing`'s job; walking stored chunks is
:func:`spikestore._read.segment.iter_blocks`'s.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from spikestore._format import dtypes, new_stream_doc, split_key, stream_node
from spikestore._format.layout import RecordLayout
from spikestore._read import indexing
from spikestore._read.index_arrays import IndexArrays
from spikestore._read.segment import Segment, iter_blocks
from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    from spikestore._read.reader import StoreReader
    from spikestore._read.run import Run

__all__ = ["Chunk", "Stream"]


class Chunk(NamedTuple):
    """Records ``start:stop`` of a stream, decoded (see :meth:`Stream.iter_chunks`)."""

    start: int
    stop: int
    values: np.ndarray
    steps: np.ndarray
    segment: Segment


def _reopen_stream(recipe: tuple[Any, ...], created: str, key: str, count: int) -> Stream:
    """Stream ``key`` of the run ``recipe`` reopens, in this process's copy of it (opened once per process
    and kept, :func:`~spikestore._read.distributed.worker_run`), refreshed once if it has fewer than
    ``count`` records: what a pickled stream becomes in a dask worker."""
    from spikestore._read.distributed import worker_run

    run = worker_run(recipe, created)
    stream = run[key]
    if len(stream) < count:  # records committed after this process opened the run
        run.refresh()
    return stream


class Stream(IndexArrays):
    """One recorded quantity of one layer: records along axis 0.

    ``s[i]`` is a numpy array with the original dtype and shape; slices and
    integer arrays give stacked records when they share one shape, and
    ``s[i, ...]`` indexes inside the selected records. Get one with
    ``run[key]``.
    """

    def __init__(self, run: Run, key: str, reader: StoreReader) -> None:
        self._run = run
        self._reader = reader
        self.key = key
        self.quantity, self.layer = split_key(key)
        self.node = stream_node(key)
        self._dims: tuple[str, ...] | None = None
        self.reload()

    def reload(self) -> None:
        """Re-read the stream's document (:meth:`Run.refresh <spikestore.Run.refresh>` calls this)."""
        self.node, doc = self._reader.stream_doc(self.key)
        self._committed = doc is not None
        # Listed in the root, not committed yet: no records, nothing on disk to read.
        self.doc = doc if doc is not None else new_stream_doc(self.key, 1, {})
        self.segments = [self.segment_for(d) for d in self.doc["segments"] if d["count"] > 0]
        self._starts = [s.start for s in self.segments]
        self._index: dict[str, np.ndarray] = {}

    def segment_for(self, doc: dict[str, Any]) -> Segment:
        """The segment ``doc`` (one entry of the stream document's ``segments``), read through this stream's run."""
        return Segment(self, doc, self._reader)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled into a dask task (the xarray engine's lazy arrays, a process pool): the worker reads
        # through one copy of the run per process instead of opening the store again for every task.
        return (_reopen_stream, (self._run.__reduce__(), self._run.doc["created"], self.key, len(self)))

    def __len__(self) -> int:
        return int(self.doc["count"])

    @property
    def run(self) -> Run:
        """The run this stream was read from."""
        return self._run

    @property
    def selection(self) -> dict[str, Any] | None:
        """What part of the layer each record covers (set by monitors)."""
        return self.doc["selection"]

    @property
    def attrs(self) -> dict[str, Any]:
        """Attributes the monitor (or ``Store.set_stream_info``) gave the stream."""
        return self.doc["attrs"]

    @property
    def layout(self) -> RecordLayout:
        """What the axes of the records mean, as the monitor recorded it (:class:`RecordLayout`)."""
        return RecordLayout.from_selection(self.selection)

    @property
    def dims(self) -> tuple[str, ...]:
        """Names of the axes of one record: ``("time", "batch", "neuron")`` and the like.

        Taken from the monitor's step mode (:attr:`layout`). Assign a tuple
        to name the axes of records whose layout spikestore cannot know
        (appended by hand, or reduced by a ``function_on_*``); xarray views
        and :mod:`spikestore.analysis` use these names.
        """
        if self._dims is not None:
            return self._dims
        return self.layout.dims(self.segments[0].shape) if self.segments else ()

    @dims.setter
    def dims(self, names: tuple[str, ...] | list[str] | None) -> None:
        if names is not None:
            names = tuple(str(n) for n in names)
            bad = [seg for seg in self.segments if len(seg.shape) != len(names)]
            if bad or len(set(names)) != len(names):
                raise InvalidArgumentError(
                    f"stream {self.key!r}: dims {names} must be distinct and name every axis of "
                    f"every record (record shapes: {sorted({s.shape for s in self.segments})})")
        self._dims = names

    def nbytes(self) -> int:
        """Bytes the stream occupies on disk (records, index arrays and documents)."""
        return self._reader.nbytes(self.node) if self._committed else 0

    def segment_of(self, i: int) -> Segment:
        """The segment holding record ``i`` (``-1``: the last record).

        Raises
        ------
        IndexError
            If there is no record ``i``.
        """
        j = indexing.position(i, len(self), self.key)
        return self.segments[bisect.bisect_right(self._starts, j) - 1]

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, tuple):  # records first, then inside them
            return indexing.inside(self.__getitem__, item)
        if indexing.is_position(item):
            j = indexing.position(item, len(self), self.key)
            seg = self.segment_of(j)
            return seg.read(j - seg.start, j - seg.start + 1)[0, ...]
        return self._gather(indexing.positions(item, len(self), self.key))

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        """Records at positions ``idx``, stacked (they must share one shape and dtype)."""
        if idx.size == 0:
            seg = self.segments[0] if self.segments else None
            return np.zeros((0, *(seg.shape if seg else ())), seg.dtype if seg else np.float32)
        which = np.searchsorted(self._starts, idx, side="right") - 1
        used = [self.segments[k] for k in np.unique(which)]
        if len({(s.shape, s.dtype) for s in used}) > 1:
            raise InvalidArgumentError(
                f"records of stream {self.key!r} in this selection have different shapes or "
                "dtypes (they span segments); read them one by one, per segment (s.segments), or padded "
                "along the batch axis with s.padded[...]")
        if np.all(np.diff(idx) == 1):  # a contiguous run: read chunk by chunk
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            parts = [seg.read(max(lo, seg.start) - seg.start, min(hi, seg.stop) - seg.start) for seg in used]
            return np.concatenate(parts) if len(parts) > 1 else parts[0]
        out = np.empty((len(idx), *used[0].shape), used[0].dtype)
        for k in np.unique(which):
            seg, mask = self.segments[k], which == k
            out[mask] = seg.take(idx[mask] - seg.start)
        return out

    def sel(self, step: Any, call: int | None = None) -> np.ndarray:
        """Records by step number rather than by position.

        Parameters
        ----------
        step
            An int gives the one record of that step (like ``s[i]``); a step
            with several records (single-step mode records one per time step)
            needs ``call`` to say which. A list/array of steps, or a slice of
            steps with **both ends included** (as in xarray's ``sel``), gives
            every matching record stacked, in record order.
        call
            Keep only records with this ``call`` (order within the step).
        """
        picked = indexing.step_positions(self.steps, self.calls, step, call, self.key)
        return self[picked] if isinstance(picked, int) else self._gather(picked)

    def iter_chunks(self, start: int = 0, stop: int | None = None, *,
                    max_records: int | None = None) -> Iterator[Chunk]:
        """Decoded records ``start:stop`` one stored chunk at a time (bounded memory).

        Each :class:`Chunk` holds consecutive records of one segment (one
        shape) and never crosses a stored chunk, so a full pass keeps at most
        one decoded chunk alive; ``max_records`` splits chunks further when
        decoded records are large (bits decode to 32x their stored size as
        float32).
        """
        start, stop, _ = slice(start, stop).indices(len(self))
        steps = self.steps
        for block in iter_blocks(self.segments, start, stop, max_records=max_records):
            yield Chunk(block.start, block.stop, block.values(), steps[block.start:block.stop], block.segment)

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self.iter_chunks():
            yield from chunk.values

    def _load_index(self, name: str) -> np.ndarray:
        return self._reader.index(self.node, self.doc, name, f"stream {self.key!r} index")

    @property
    def ranks(self) -> np.ndarray:
        """The rank that recorded each record (``int64``, aligned with :attr:`steps`): the run's one rank.

        ``0`` throughout for a one-process store, ``r`` in ``run.rank(r)``'s
        streams; ``run[key]`` of a run of several ranks merges them
        (:mod:`spikestore._read.ranked`).
        """
        out = np.full(len(self), self._run.ranks[0], np.int64)
        out.setflags(write=False)
        return out

    @property
    def parts(self) -> dict[int, Stream]:
        """This stream by the rank that recorded it: ``{rank: self}`` (a merged stream has one per rank).

        With :meth:`merge`, the way to compute per record part by part and
        get the answer in the stream's record order, whichever view this is.
        """
        return {self._run.ranks[0]: self}

    def merge(self, per_part: list[np.ndarray]) -> np.ndarray:
        """Per-record arrays computed for each of :attr:`parts`, in its order, as one array in record
        order: for one rank, the one array itself.

        Raises
        ------
        InvalidArgumentError
            Unless given one array with one entry per record.
        """
        if len(per_part) != 1 or len(per_part[0]) != len(self):
            raise InvalidArgumentError(
                f"stream {self.key!r}: merge() takes one array per rank [{self._run.ranks[0]}] with that rank's "
                f"record count [{len(self)}], not lengths {[len(a) for a in per_part]}")
        return per_part[0]

    @property
    def all_segments(self) -> list[Segment]:
        """Every stored segment of the stream over the ranks that recorded it: here :attr:`segments`."""
        return list(self.segments)

    def tensor(self, i: int) -> Any:
        """Record ``i`` as a torch tensor (dtype restored, bfloat16 included)."""
        return dtypes.to_tensor(self[i], self.segment_of(i).doc["dtype"])

    @property
    def batch_sizes(self) -> np.ndarray | None:
        """The batch size of each record (``int64``), or ``None`` when records have no ``batch`` axis.

        The batch axis is the one :attr:`dims` names ``"batch"``. Sizes
        differ where a segment holds a smaller batch (an epoch's last one);
        the one-array views (:meth:`to_dask`, :attr:`padded`) pad those
        records and carry these sizes as their ``batch_size`` coordinate.
        """
        from spikestore._read.padded import batch_sizes

        return batch_sizes(self)

    @property
    def padded(self) -> Any:
        """Records as one array, padded along the batch axis: ``s.padded[18:22]``.

        Takes the keys ``s[...]`` takes. Records with a smaller batch are
        padded to the largest one with ``0`` (spikes, integers, bool) or
        ``NaN`` (other floats); :attr:`batch_sizes` says which rows are real.
        Raises ``InvalidArgumentError`` when records differ on another axis
        (see :mod:`spikestore._read.padded` for the rule).
        """
        from spikestore._read.padded import PaddedRecords

        return PaddedRecords(self)

    def to_dask(self, segment: int | None = None) -> Any:
        """One lazy dask array ``[records, *shape]``, one dask chunk per stored chunk.

        Records whose batch is smaller than the largest (an epoch's last
        batch) are padded along the batch axis, as in :attr:`padded`;
        :attr:`batch_sizes` gives each record's real size. ``segment=k``
        gives segment ``k`` alone, unpadded: the way to read a stream whose
        records differ on another axis (which raises ``InvalidArgumentError``
        without it). The array covers the records committed when this is
        called; its tasks pickle, so dask's process and distributed
        schedulers run it too.
        """
        from spikestore._read.views import stream_to_dask

        return stream_to_dask(self, segment)

    def to_xarray(self, segment: int | None = None) -> Any:
        """A lazy (dask-backed) ``xarray.DataArray``: dims ``record`` + :attr:`dims`.

        The data is :meth:`to_dask`'s (padded along the batch axis);
        ``step``, ``call`` and, when records have a batch axis,
        ``batch_size`` are coordinates along ``record``
        (``da.swap_dims(record="step")`` selects by step). ``segment`` picks
        one segment.
        """
        from spikestore._read.views import stream_to_xarray

        return stream_to_xarray(self, segment)

    def __repr__(self) -> str:
        return f"<spikestore.Stream {self.key!r}: {len(self)} records, {len(self.segments)} segment(s)>"
