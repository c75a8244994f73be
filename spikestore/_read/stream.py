"""``run[key]``: one stream's records along axis 0, over every part of the run, read lazily.

A :class:`Stream` shows the records of one stream key over every part of
the run that has it (:mod:`spikestore._read.parts`: a one-process store is a
run of one part, a run recorded by several ranks has one part per rank), in
one order (:func:`~spikestore._read.parts.record_order`); a record is read
from its part's segments. Which positions a key picks is
:mod:`spikestore._read.indexing`'s job; walking stored chunks is
:func:`spikestore._read.segment.iter_blocks`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from spikestore._format import INDEX_ARRAYS, dtypes, new_stream_doc, split_key, stream_node
from spikestore._format.layout import RecordLayout
from spikestore._read import indexing
from spikestore._read.padded import PaddedRecords, batch_sizes
from spikestore._read.parts import Parts, StreamPart, groups
from spikestore._read.segment import Segment, iter_blocks
from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    from pathlib import Path

    import dask.array
    import torch
    import xarray as xr

    from spikestore._read.reader import StoreReader
    from spikestore.backends import StoreURL

__all__ = ["Chunk", "Stream", "StreamOwner"]


class StreamOwner(Protocol):
    """What a stream knows of the run it was read from (:class:`spikestore.Run` is one)."""

    @property
    def path(self) -> Path | StoreURL: ...

    @property
    def streams(self) -> list[str]: ...

    def __getitem__(self, key: str) -> Stream: ...


class Chunk(NamedTuple):
    """Decoded records of one stored chunk of one segment (see :meth:`Stream.iter_chunks`).

    ``start:stop`` is the part of the stored chunk it covers, as positions in
    the segment's part; ``positions`` are the stream positions of the
    records in ``values`` (for a stream of one part, ``start..stop - 1``).
    """

    start: int
    stop: int
    values: np.ndarray
    steps: np.ndarray
    segment: Segment
    positions: np.ndarray


class Stream:
    """One recorded quantity of one layer: records along axis 0, over every part of the run.

    ``s[i]`` is a numpy array with the original dtype and shape; slices and
    integer arrays give stacked records when they share one shape, and
    ``s[i, ...]`` indexes inside the selected records. Get one with
    ``run[key]``.
    """

    def __init__(self, run: StreamOwner, key: str, parts: Sequence[tuple[int, StoreReader]],
                 reduce: tuple[Callable[..., Stream], tuple[Any, ...]], *, ordered: bool) -> None:
        self._run = run
        self._reduce = reduce
        self._ordered = ordered  # records in record_order (a run of several parts), else as stored
        self.key = key
        self.quantity, self.layer = split_key(key)
        self.node = stream_node(key)
        self._dims: tuple[str, ...] | None = None
        self._parts = Parts([], ordered)
        self.reload(parts)

    def reload(self, parts: Sequence[tuple[int, StoreReader]] | None = None) -> None:
        """Re-read the parts' documents; ``parts`` (``(rank, reader)`` of every part that has the
        stream) when parts came since. :meth:`Run.refresh <spikestore.Run.refresh>` calls this."""
        current = self._parts.parts
        if parts is not None:
            known = {p.rank: p for p in current}
            current = [known[r] if r in known and known[r].reader is reader else StreamPart(self, r, reader)
                       for r, reader in parts]
        for p in current:
            p.reload()
        self._parts = Parts(current, self._ordered)
        self._index: dict[str, np.ndarray] = {}

    def segment_for(self, rank: int, doc: dict[str, Any]) -> Segment:
        """The segment ``doc`` of rank ``rank``'s part (what a pickled segment becomes)."""
        return self._parts.part(rank).segment_for(doc)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled into a dask task (the xarray engine's lazy arrays, a process pool): the worker reads
        # through one copy of the run per process instead of opening the store again for every task.
        func, args = self._reduce
        return (func, (*args, len(self)))

    def __len__(self) -> int:
        return self._parts.length

    @property
    def run(self) -> StreamOwner:
        """The run this stream was read from."""
        return self._run

    @property
    def doc(self) -> dict[str, Any]:
        """The stream document of the first part that has the stream (``docs/format.md`` §3)."""
        return self._parts.parts[0].doc if self._parts.parts else new_stream_doc(self.key, 1, {})

    @property
    def selection(self) -> dict[str, Any] | None:
        """What part of the layer each record covers (set by monitors)."""
        selection: dict[str, Any] | None = self.doc["selection"]
        return selection

    @property
    def attrs(self) -> dict[str, Any]:
        """Attributes the monitor (or ``Store.set_stream_info``) gave the stream."""
        attrs: dict[str, Any] = self.doc["attrs"]
        return attrs

    @property
    def layout(self) -> RecordLayout:
        """What the axes of the records mean, as the monitor recorded it (:class:`RecordLayout`)."""
        return RecordLayout.from_selection(self.selection)

    @property
    def segments(self) -> list[Segment]:
        """Every stored segment of the stream, part by part (rank by rank), each in its part's order.

        A segment's ``start``/``stop`` are positions in its part;
        :meth:`record_positions` gives their stream positions.
        """
        return [seg for p in self._parts.parts for seg in p.segments]

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
        segs = self.segments
        return self.layout.dims(segs[0].shape) if segs else ()

    @dims.setter
    def dims(self, names: tuple[str, ...] | list[str] | None) -> None:
        if names is not None:
            names = tuple(str(n) for n in names)
            segs = self.segments
            bad = [seg for seg in segs if len(seg.shape) != len(names)]
            if bad or len(set(names)) != len(names):
                raise InvalidArgumentError(
                    f"stream {self.key!r}: dims {names} must be distinct and name every axis of "
                    f"every record (record shapes: {sorted({s.shape for s in segs})})")
        self._dims = names

    def nbytes(self) -> int:
        """Bytes the stream occupies on disk over every part (records, index arrays and documents)."""
        return sum(p.nbytes() for p in self._parts.parts)

    # -- positions ------------------------------------------------------------------------
    def record_positions(self, segment: Segment, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Stream positions (``int64``) of the records ``start:stop`` of ``segment``'s part (positions in
        that part, as ``segment.start``; default: the segment's own records)."""
        lo = segment.start if start is None else start
        hi = segment.stop if stop is None else stop
        return self._parts.positions(segment.rank, lo, hi)

    def segment_rows(self, idx: np.ndarray) -> list[tuple[Segment, np.ndarray, np.ndarray]]:
        """Where the records at stream positions ``idx`` are stored: ``(segment, at, rows)`` for each
        segment holding some, where ``idx[at]`` are the segment's rows ``rows`` (segment-local, in the
        order of ``idx``)."""
        out = []
        for part, at, local in self._parts.locate_all(np.asarray(idx, np.int64)):
            for k, where in groups(part.segment_at(local)):
                seg = part.segments[k]
                out.append((seg, at[where], local[where] - seg.start))
        return out

    def _where(self, j: int) -> tuple[Segment, int]:
        """The segment holding record ``j`` (a checked position) and the record's row in it."""
        part, local = self._parts.locate(j)
        seg = part.segment_of(local)
        return seg, local - seg.start

    def segment_of(self, i: int) -> Segment:
        """The segment holding record ``i`` (``-1``: the last record).

        Raises
        ------
        IndexError
            If there is no record ``i``.
        """
        return self._where(indexing.position(i, len(self), self.key))[0]

    # -- records ---------------------------------------------------------------------------
    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, tuple):  # records first, then inside them
            return indexing.inside(self.__getitem__, item)
        if indexing.is_position(item):
            seg, row = self._where(indexing.position(item, len(self), self.key))
            return seg.read(row, row + 1)[0, ...]
        return self._gather(indexing.positions(item, len(self), self.key))

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        """Records at positions ``idx``, stacked (they must share one shape and dtype)."""
        if idx.size == 0:
            segs = self.segments
            seg = segs[0] if segs else None
            return np.zeros((0, *(seg.shape if seg else ())), seg.dtype if seg else np.float32)
        where = self.segment_rows(idx)
        if len({(seg.shape, seg.dtype) for seg, _, _ in where}) > 1:
            raise InvalidArgumentError(
                f"records of stream {self.key!r} in this selection have different shapes or "
                "dtypes (they span segments); read them one by one, per segment (s.segments), or padded "
                "along the batch axis with s.padded[...]")
        if len(where) == 1 and np.all(np.diff(where[0][2]) == 1):  # a contiguous run of one segment
            seg, _, rows = where[0]
            return seg.read(int(rows[0]), int(rows[-1]) + 1)
        seg0 = where[0][0]
        out = np.empty((len(idx), *seg0.shape), seg0.dtype)
        for seg, at, rows in where:
            contiguous = np.all(np.diff(rows) == 1)
            out[at] = seg.read(int(rows[0]), int(rows[-1]) + 1) if contiguous else seg.take(rows)
        return out

    def sel(self, step: Any, call: int | None = None, rank: int | None = None) -> np.ndarray:
        """Records by step number rather than by position.

        Parameters
        ----------
        step
            An int gives the one record of that step (like ``s[i]``); a step
            with several records (single-step mode records one per time step,
            and every rank records each step) needs ``call`` and ``rank`` to
            say which. A list/array of steps, or a slice of steps with **both
            ends included** (as in xarray's ``sel``), gives every matching
            record stacked, in record order.
        call
            Keep only records with this ``call`` (order within the step).
        rank
            Keep only records of this rank.
        """
        mine = None if rank is None else self.ranks == rank
        picked = indexing.step_positions(self.steps, self.calls, step, call, self.key, where=mine,
                                         what=f"rank {rank} (its ranks: {self._parts.ranks})")
        return self[picked] if isinstance(picked, int) else self._gather(picked)

    def iter_chunks(self, start: int = 0, stop: int | None = None, *,
                    max_records: int | None = None) -> Iterator[Chunk]:
        """Decoded records ``start:stop`` one stored chunk at a time (bounded memory).

        Each :class:`Chunk` holds records of one segment (one shape) and
        never crosses a stored chunk, so a full pass keeps at most one
        decoded chunk alive; ``max_records`` splits chunks further when
        decoded records are large (bits decode to 32x their stored size as
        float32). Chunks come segment by segment, part by part (rank by
        rank); ``Chunk.positions`` places each record in the stream. For a
        stream of one part that is record order, with consecutive records.
        """
        start, stop, _ = slice(start, stop).indices(len(self))
        steps = self.steps
        for seg in self.segments:
            pos = self.record_positions(seg)
            inside = np.flatnonzero((pos >= start) & (pos < stop))
            if not len(inside):
                continue
            lo, hi = seg.start + int(inside[0]), seg.start + int(inside[-1]) + 1
            for block in iter_blocks([seg], lo, hi, max_records=max_records):
                where = self.record_positions(seg, block.start, block.stop)
                keep = (where >= start) & (where < stop)
                values = block.values()
                if not keep.all():
                    values, where = values[keep], where[keep]
                if len(where):
                    yield Chunk(block.start, block.stop, values, steps[where], seg, where)

    def __iter__(self) -> Iterator[np.ndarray]:
        if not self._ordered:  # stored order: chunk by chunk
            for chunk in self.iter_chunks():
                yield from chunk.values
        else:
            for i in range(len(self)):
                yield self[i]

    # -- index arrays ----------------------------------------------------------------------
    def index(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """The index array ``name`` (``"step"``, ``"call"`` or ``"time"``): one entry per record, read-only.

        Read on first use and kept until :meth:`Run.refresh <spikestore.Run.refresh>`.
        ``start``/``stop`` give the entries of records ``start:stop`` alone, as
        a new array: in a stream of one part only the index chunks that hold
        them are read, so following a growing stream costs what is new (a
        stream of several parts reads, and keeps, the whole array).
        """
        if name not in INDEX_ARRAYS:
            raise InvalidArgumentError(f"index must be one of {', '.join(INDEX_ARRAYS)}, not {name!r}")
        if start is not None or stop is not None:
            lo, hi, _ = slice(start, stop).indices(len(self))
            if self._ordered or name in self._index or len(self._parts.parts) != 1:
                return np.array(self.index(name)[lo:hi])
            return self._parts.parts[0].index_range(name, lo, max(lo, hi))
        arr = self._index.get(name)
        if arr is None:
            arr = self._parts.in_order(name)
            arr.setflags(write=False)
            self._index[name] = arr
        return arr

    @property
    def steps(self) -> np.ndarray:
        """Step of each record (``int64``)."""
        return self.index("step")

    @property
    def calls(self) -> np.ndarray:
        """Order of each record within its step on its rank (``int32``; single-step mode gives 0..T-1)."""
        return self.index("call")

    @property
    def times(self) -> np.ndarray:
        """Wall-clock time (Unix seconds) at which each record was captured."""
        return self.index("time")

    @property
    def ranks(self) -> np.ndarray:
        """The rank that recorded each record (``int64``, aligned with :attr:`steps`).

        ``0`` throughout for a one-process store, ``r`` in ``run.rank(r)``'s streams.
        """
        out = self._index.get("rank")
        if out is None:
            out = np.zeros(len(self), np.int64)
            for seg in self.segments:
                out[self.record_positions(seg)] = seg.rank
            out.setflags(write=False)
            self._index["rank"] = out
        return out

    # -- views -----------------------------------------------------------------------------
    def tensor(self, i: int) -> torch.Tensor:
        """Record ``i`` as a torch tensor (dtype restored, bfloat16 included)."""
        tensor: torch.Tensor = dtypes.to_tensor(self[i], self.segment_of(i).doc["dtype"])
        return tensor

    @property
    def batch_sizes(self) -> np.ndarray | None:
        """The batch size of each record (``int64``), or ``None`` when records have no ``batch`` axis.

        The batch axis is the one :attr:`dims` names ``"batch"``. Sizes
        differ where a segment holds a smaller batch (an epoch's last one);
        the one-array views (:meth:`to_dask`, :attr:`padded`) pad those
        records and carry these sizes as their ``batch_size`` coordinate.
        """
        return batch_sizes(self)

    @property
    def padded(self) -> PaddedRecords:
        """Records as one array, padded along the batch axis: ``s.padded[18:22]``.

        Takes the keys ``s[...]`` takes. Records with a smaller batch are
        padded to the largest one with ``0`` (spikes, integers, bool) or
        ``NaN`` (other floats); :attr:`batch_sizes` says which rows are real.
        Raises ``InvalidArgumentError`` when records differ on another axis
        (see :mod:`spikestore._read.padded` for the rule).
        """
        return PaddedRecords(self)

    def to_dask(self, segment: int | None = None) -> dask.array.Array:
        """One lazy dask array ``[records, *shape]``, one dask chunk per stored chunk.

        Records whose batch is smaller than the largest (an epoch's last
        batch) are padded along the batch axis, as in :attr:`padded`;
        :attr:`batch_sizes` gives each record's real size. ``segment=k``
        gives segment ``k`` of :attr:`segments` alone, unpadded: the way to
        read a stream whose records differ on another axis (which raises
        ``InvalidArgumentError`` without it). The array covers the records
        committed when this is called; its tasks pickle, so dask's process
        and distributed schedulers run it too.
        """
        from spikestore._integrations.dask_views import stream_to_dask

        return stream_to_dask(self, segment)

    def to_xarray(self, segment: int | None = None) -> xr.DataArray:
        """A lazy (dask-backed) ``xarray.DataArray``: dims ``record`` + :attr:`dims`.

        The data is :meth:`to_dask`'s (padded along the batch axis);
        ``step``, ``call``, ``rank`` and, when records have a batch axis,
        ``batch_size`` are coordinates along ``record``
        (``da.swap_dims(record="step")`` selects by step). ``segment`` picks
        one segment.
        """
        from spikestore._integrations.dask_views import stream_to_xarray

        return stream_to_xarray(self, segment)

    def __repr__(self) -> str:
        ranks = "" if len(self._parts.ranks) <= 1 else f" from ranks {self._parts.ranks}"
        return f"<spikestore.Stream {self.key!r}: {len(self)} records, {len(self.segments)} segment(s){ranks}>"
