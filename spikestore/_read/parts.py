"""The parts of a stream and the one order of their records.

A run is a set of parts (``docs/format.md`` §1.2): a one-process store is a
run of one part, a run recorded by several ranks has one part per rank. A
stream's records in one part are a :class:`StreamPart` (that part's stream
document, segments and index arrays, in the part's own order). :class:`Parts`
puts the parts of one stream in one order and says where each record is:
the stored order in a run of one part; in a run of several,
:func:`record_order`, **by step, then rank, then call, then the rank's own
order**, a stable order that does not depend on when each rank's writer
committed (nor on how many ranks recorded the key).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spikestore._format import INDEX_ARRAYS, new_stream_doc
from spikestore._read.segment import Segment, SegmentOwner

if TYPE_CHECKING:
    from spikestore._read.reader import StoreReader

__all__ = ["Parts", "StreamPart", "groups", "record_order"]


def groups(which: np.ndarray) -> list[tuple[int, Any]]:
    """``(k, where)`` for each distinct value ``k`` of ``which``, ``where`` picking its entries (a slice
    when all entries are ``k``, the common case of records read from one segment)."""
    if not len(which):
        return []
    if which[0] == which[-1] and (which == which[0]).all():
        return [(int(which[0]), slice(None))]
    return [(int(k), np.flatnonzero(which == k)) for k in np.unique(which)]


def record_order(steps: np.ndarray, calls: np.ndarray, ranks: np.ndarray, local: np.ndarray) -> np.ndarray:
    """The order of the records of several parts (concatenated part by part): the positions, in that
    concatenation, of the stream's records 0, 1, ...: by step, then rank, then call, then the part's order."""
    return np.lexsort((local, calls, ranks, steps))


class StreamPart:
    """The records of one stream key stored in one part of a run (one rank's), in that part's order.

    Parameters
    ----------
    owner
        The stream the part belongs to (its segments name it).
    rank
        The rank whose part this is.
    reader
        The part's :class:`~spikestore._read.reader.StoreReader`.
    """

    def __init__(self, owner: SegmentOwner, rank: int, reader: StoreReader) -> None:
        self.owner, self.rank, self.reader = owner, rank, reader
        self.doc: dict[str, Any] = {}
        self.segments: list[Segment] = []

    def reload(self) -> None:
        """Re-read the part's stream document."""
        key = self.owner.key
        self.node, doc = self.reader.stream_doc(key)
        self.committed = doc is not None
        # Listed in the root, not committed yet: no records, nothing on disk to read.
        self.doc = doc if doc is not None else new_stream_doc(key, 1, {})
        self.segments = [self.segment_for(d) for d in self.doc["segments"] if d["count"] > 0]
        self._starts = [s.start for s in self.segments]
        self._index: dict[str, np.ndarray] = {}

    def segment_for(self, doc: dict[str, Any]) -> Segment:
        """The segment ``doc`` (one entry of the part's stream document)."""
        return Segment(self.owner, self.rank, doc, self.reader, self.node)

    def __len__(self) -> int:
        return int(self.doc["count"])

    def index(self, name: str) -> np.ndarray:
        """The part's index array ``name``, in the part's order (read once, kept until :meth:`reload`)."""
        arr = self._index.get(name)
        if arr is None:
            arr = self.reader.index(self.node, self.doc, name, f"stream {self.owner.key!r} index")
            self._index[name] = arr
        return arr

    def index_range(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Entries ``lo:hi`` of the part's index array ``name``, reading only the chunks that hold them
        (or slicing the whole array when it was read already)."""
        arr = self._index.get(name)
        if arr is not None:
            return arr[lo:hi].copy()
        return self.reader.index(self.node, self.doc, name, f"stream {self.owner.key!r} index", lo, hi)

    def segment_at(self, rows: np.ndarray) -> np.ndarray:
        """The number of the segment (in :attr:`segments`) holding each of the part's positions ``rows``."""
        return np.searchsorted(self._starts, rows, side="right") - 1

    def segment_of(self, j: int) -> Segment:
        """The segment holding the part's record ``j``."""
        return self.segments[bisect.bisect_right(self._starts, j) - 1]

    def nbytes(self) -> int:
        """Bytes of the part's stream on disk."""
        return self.reader.nbytes(self.node) if self.committed else 0


class Parts:
    """The parts of one stream, and where each of the stream's records is among them.

    Parameters
    ----------
    parts
        The parts, rank by rank, reloaded.
    ordered
        Whether the records follow :func:`record_order` (a run of several
        parts), else the one part's stored order.
    """

    def __init__(self, parts: Sequence[StreamPart], ordered: bool) -> None:
        self.parts = list(parts)
        lengths = [len(p) for p in self.parts]
        self.length = sum(lengths)
        self._order: np.ndarray | None = None  # None: one part, in its stored order
        if not ordered or not self.parts:
            return
        part_of = np.concatenate([np.full(n, k, np.int64) for k, n in enumerate(lengths)])
        local = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
        ranks = np.array([p.rank for p in self.parts], np.int64)[part_of]
        order = record_order(self.joined("step"), self.joined("call"), ranks, local)
        self._part_of, self._local, self._order = part_of[order], local[order], order
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order), dtype=np.int64)
        self._positions = [inverse[a:b] for a, b in itertools.pairwise(np.cumsum([0, *lengths]))]

    @property
    def ranks(self) -> list[int]:
        """The parts' ranks, in order."""
        return [p.rank for p in self.parts]

    def part(self, rank: int) -> StreamPart:
        """Rank ``rank``'s part (``KeyError`` when there is none)."""
        for p in self.parts:
            if p.rank == rank:
                return p
        raise KeyError(rank)

    def joined(self, name: str) -> np.ndarray:
        """The parts' index arrays ``name``, concatenated part by part."""
        arrays = [p.index(name) for p in self.parts]
        return np.concatenate(arrays) if arrays else np.zeros(0, INDEX_ARRAYS[name])

    def in_order(self, name: str) -> np.ndarray:
        """The index array ``name`` of the stream: one entry per record, in the stream's order."""
        arr = self.joined(name)
        return arr if self._order is None else arr[self._order]

    def positions(self, rank: int, lo: int, hi: int) -> np.ndarray:
        """Stream positions of the records ``lo:hi`` of rank ``rank``'s part."""
        if self._order is None:
            return np.arange(lo, hi, dtype=np.int64)
        return self._positions[self.ranks.index(rank)][lo:hi]

    def locate(self, j: int) -> tuple[StreamPart, int]:
        """The part holding the stream's record ``j`` (a checked position), and the record's position in it."""
        if self._order is None:
            return self.parts[0], j
        return self.parts[int(self._part_of[j])], int(self._local[j])

    def locate_all(self, idx: np.ndarray) -> list[tuple[StreamPart, np.ndarray, np.ndarray]]:
        """``(part, at, local)`` for the parts holding stream positions ``idx``: ``idx[at]`` are the
        part's records ``local``."""
        if self._order is None:
            return [(self.parts[0], np.arange(len(idx)), idx)] if self.parts and len(idx) else []
        at_all = np.arange(len(idx))
        return [(self.parts[k], at_all[at], self._local[idx[at]]) for k, at in groups(self._part_of[idx])]
