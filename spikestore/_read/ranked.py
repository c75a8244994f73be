"""One stream of a run recorded by several ranks: the ranks' records merged into one order.

A run recorded by a process group (``docs/format.md`` §1.2) keeps each rank's
records in that rank's own part, a complete store. :class:`RankedStream`
presents the records of one stream key over every part that has it, in one
order: **by step, then rank, then call** (then the rank's own record order),
a stable order that does not depend on when each rank's writer committed.
Reading a record reads it from its rank's part, through that part's plain
:class:`~spikestore._read.stream.Stream`; ``Stream.ranks`` says which rank
recorded each record, and ``run.rank(r)[key]`` is rank ``r``'s stream alone.

What it offers is the record-level reading of a stream (``len``, ``s[...]``,
``sel``, iteration, the index arrays, ``to_dask``/``to_xarray``), and
:attr:`~RankedStream.parts` with :meth:`~RankedStream.merge` for work done
rank part by rank part (``spikestore.analysis`` walks every part's chunks
and merges per-record results). The views of stored segments themselves
(``segments``, ``padded``, ``iter_chunks``) are each rank's, on
``run.rank(r)[key]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spikestore._format import INDEX_ARRAYS, dtypes, rank_part, split_key
from spikestore._format.layout import RecordLayout
from spikestore._read import indexing
from spikestore._read.index_arrays import IndexArrays
from spikestore.backends import StoreURL
from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    from spikestore._read.run import Run
    from spikestore._read.segment import Segment
    from spikestore._read.stream import Stream

__all__ = ["RankedStream", "part_location"]


def part_location(path: Path | StoreURL, rank: int) -> Path | StoreURL:
    """Where rank ``rank``'s part of the run at ``path`` is: the root itself for rank 0, else its
    ``__rank<r>`` folder (a key prefix, for a run on object storage)."""
    if rank == 0:
        return path
    return path / rank_part(rank)


class RankedStream(IndexArrays):
    """Records of one stream key over every rank of a run, by step, then rank, then call.

    Get one with ``run[key]`` on a run recorded by several ranks.
    """

    def __init__(self, run: Run, key: str, parts: dict[int, Stream]) -> None:
        self._run = run
        self.key = key
        self.quantity, self.layer = split_key(key)
        self._parts = parts
        self._dims: tuple[str, ...] | None = None
        self.reload()

    def reload(self, parts: dict[int, Stream] | None = None) -> None:
        """Re-merge the parts' records, with ``parts`` when ranks came since (:meth:`Run.refresh
        <spikestore.Run.refresh>` calls this)."""
        if parts is not None:
            self._parts = parts
        lengths = {r: len(s) for r, s in self._parts.items()}
        ranks = np.concatenate([np.full(n, r, np.int64) for r, n in lengths.items()] or [np.zeros(0, np.int64)])
        local = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths.values()] or [np.zeros(0, np.int64)])
        steps = self._joined("step")
        calls = self._joined("call")
        order = np.lexsort((local, calls, ranks, steps))
        self._rank_of, self._local = ranks[order], local[order]
        self._order = order
        self._index: dict[str, np.ndarray] = {}

    def _joined(self, name: str) -> np.ndarray:
        arrays = [s.index(name) for s in self._parts.values()]
        return np.concatenate(arrays) if arrays else np.zeros(0, INDEX_ARRAYS[name])

    def __len__(self) -> int:
        return len(self._order)

    @property
    def run(self) -> Run:
        """The run this stream was read from."""
        return self._run

    @property
    def parts(self) -> dict[int, Stream]:
        """Each rank's own stream (only ranks that recorded this key), by rank."""
        return dict(self._parts)

    @property
    def all_segments(self) -> list[Segment]:
        """Every stored segment of the stream, rank by rank (each part's :attr:`segments <spikestore.Stream.segments>`)."""
        return [seg for part in self._parts.values() for seg in part.segments]

    def merge(self, per_part: list[np.ndarray]) -> np.ndarray:
        """Per-record arrays computed for each of :attr:`parts` (one per rank, in its order), as one
        array in this stream's merged order (by step, then rank, then call).

        Raises
        ------
        InvalidArgumentError
            When the arrays do not hold one entry per record of each part.
        """
        lengths = [len(s) for s in self._parts.values()]
        if len(per_part) != len(lengths) or any(len(a) != n for a, n in zip(per_part, lengths, strict=False)):
            raise InvalidArgumentError(
                f"stream {self.key!r}: merge() takes one array per rank {sorted(self._parts)} with that "
                f"rank's record count {lengths}, not lengths {[len(a) for a in per_part]}")
        return np.concatenate(per_part)[self._order]

    def _first(self) -> Stream:
        return next(iter(self._parts.values()))

    @property
    def selection(self) -> dict[str, Any] | None:
        """What part of the layer each record covers (rank 0's, or the first rank's that has the stream)."""
        return self._first().selection

    @property
    def attrs(self) -> dict[str, Any]:
        """The stream's attributes, as the first rank that has it recorded them."""
        return self._first().attrs

    @property
    def layout(self) -> RecordLayout:
        """What the axes of the records mean (:class:`RecordLayout`)."""
        return self._first().layout

    @property
    def dims(self) -> tuple[str, ...]:
        """Names of the axes of one record (see :attr:`Stream.dims <spikestore.Stream.dims>`)."""
        return self._dims if self._dims is not None else self._first().dims

    @dims.setter
    def dims(self, names: tuple[str, ...] | list[str] | None) -> None:
        for s in self._parts.values():
            s.dims = names  # (each part checks the names against its records)
        self._dims = None if names is None else tuple(str(n) for n in names)

    def _per_rank(self, what: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"stream {self.key!r} merges the records of ranks {sorted(self._parts)}; {what} works on one "
            f"rank's stream: use run.rank(r)[{self.key!r}] (r in {sorted(self._parts)})")

    @property
    def segments(self) -> list[Any]:
        """Stored segments are each rank's own: raises ``InvalidArgumentError`` naming ``run.rank(r)``."""
        raise self._per_rank("reading stored segments (segments, padded, iter_chunks)")

    @property
    def padded(self) -> Any:
        """Raises ``InvalidArgumentError``: padded reads work per rank (``run.rank(r)[key].padded``)."""
        raise self._per_rank("padded")

    def iter_chunks(self, *args: Any, **kwargs: Any) -> Any:
        """Raises ``InvalidArgumentError``: stored chunks are each rank's (``run.rank(r)[key].iter_chunks()``)."""
        raise self._per_rank("iter_chunks()")

    def nbytes(self) -> int:
        """Bytes the stream occupies on disk, over every rank."""
        return sum(s.nbytes() for s in self._parts.values())

    def _load_index(self, name: str) -> np.ndarray:
        return self._joined(name)[self._order]  # (in merged order)

    @property
    def ranks(self) -> np.ndarray:
        """The rank that recorded each record (``int64``, aligned with :attr:`steps`)."""
        out = self._rank_of.view()
        out.setflags(write=False)
        return out

    def locate(self, i: int) -> tuple[int, int]:
        """``(rank, position in that rank's stream)`` of record ``i``."""
        j = indexing.position(i, len(self), self.key)
        return int(self._rank_of[j]), int(self._local[j])

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, tuple):
            return indexing.inside(self.__getitem__, item)
        if indexing.is_position(item):
            rank, j = self.locate(item)
            return self._parts[rank][j]
        return self._gather(indexing.positions(item, len(self), self.key))

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        """Records at positions ``idx``, stacked (read from each rank's part)."""
        if idx.size == 0:
            return self._first()[np.zeros(0, np.int64)]
        ranks, local = self._rank_of[idx], self._local[idx]
        pieces = {int(r): self._parts[int(r)][local[ranks == r]] for r in np.unique(ranks)}
        kinds = {(p.shape[1:], p.dtype) for p in pieces.values()}
        if len(kinds) > 1:
            raise InvalidArgumentError(
                f"records of stream {self.key!r} in this selection have different shapes or dtypes on "
                f"different ranks ({sorted(str(k) for k in kinds)}); read each rank alone with run.rank(r)")
        first = next(iter(pieces.values()))
        out = np.empty((len(idx), *first.shape[1:]), first.dtype)
        for r, piece in pieces.items():
            out[ranks == r] = piece
        return out

    def sel(self, step: Any, call: int | None = None, rank: int | None = None) -> np.ndarray:
        """Records by step (and ``call``, and ``rank``), as :meth:`Stream.sel <spikestore.Stream.sel>`.

        Several ranks record the same step, so an int ``step`` picks one
        record only together with ``rank`` (or when one rank recorded it).
        """
        if rank is not None:
            if rank not in self._parts:
                raise InvalidArgumentError(
                    f"stream {self.key!r} has no records of rank {rank}; ranks: {sorted(self._parts)}")
            return self._parts[rank].sel(step, call)
        picked = indexing.step_positions(self.steps, self.calls, step, call, self.key)
        return self[picked] if isinstance(picked, int) else self._gather(picked)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def tensor(self, i: int) -> Any:
        """Record ``i`` as a torch tensor (dtype restored, bfloat16 included)."""
        rank, j = self.locate(i)
        part = self._parts[rank]
        return dtypes.to_tensor(part[j], part.segment_of(j).doc["dtype"])

    @property
    def batch_sizes(self) -> np.ndarray | None:
        """The batch size of each record, or ``None`` when records have no ``batch`` axis."""
        sizes = [s.batch_sizes for s in self._parts.values()]
        if any(s is None for s in sizes):
            return None
        return np.concatenate(sizes)[self._order]

    def to_dask(self) -> Any:
        """One lazy dask array ``[records, *shape]`` in merged order (each rank's, padded, then reordered).

        Raises ``InvalidArgumentError`` when the ranks' padded records differ
        in shape or dtype; read each rank with ``run.rank(r)[key].to_dask()``.
        """
        import dask.array as da

        arrays = [s.to_dask() for s in self._parts.values()]
        if len({(a.shape[1:], a.dtype) for a in arrays}) > 1:
            raise InvalidArgumentError(
                f"stream {self.key!r}: the ranks' records differ in shape or dtype "
                f"({sorted({str((a.shape[1:], a.dtype)) for a in arrays})}); read each rank alone with "
                "run.rank(r)[key].to_dask()")
        return da.concatenate(arrays, axis=0)[self._order]

    def to_xarray(self) -> Any:
        """A lazy ``xarray.DataArray``: dims ``record`` + :attr:`dims`, coordinates ``step``, ``call``,
        ``rank`` (and ``batch_size``) along ``record``."""
        import xarray as xr

        coords: dict[str, Any] = {"record": np.arange(len(self)), "step": ("record", self.steps),
                                  "call": ("record", self.calls), "rank": ("record", self.ranks)}
        sizes = self.batch_sizes
        if sizes is not None:
            coords["batch_size"] = ("record", sizes)
        return xr.DataArray(self.to_dask(), dims=("record", *self.dims), coords=coords, name=self.key,
                            attrs={"stream": self.key, "quantity": self.quantity, "layer": self.layer,
                                   "ranks": ",".join(str(r) for r in self._parts)})

    def __repr__(self) -> str:
        return f"<spikestore.Stream {self.key!r}: {len(self)} records from ranks {sorted(self._parts)}>"
