"""What every exporter shares: stream and step selection, chunked iteration, progress.

Exporters read records through :func:`iter_records`, which walks a stream
with the read side's one chunk iterator
(:func:`spikestore._read.segment.iter_blocks`) and keeps the records of the
selected steps; what a record's axes mean comes from
:attr:`spikestore.Stream.layout`; and they publish their output with
:func:`spikestore._atomic_files.replacing`, so a failed export leaves nothing
behind and an older output stays as it was.

A run recorded by several ranks (``docs/format.md`` §1.2) keeps each rank's
records in that rank's own part, with segments of its own. Exporters walk a
stream's :attr:`~spikestore.Stream.segments` in order (**rank by rank, each
in its part's record order**), so memory stays at one decoded chunk; every
exported record carries its rank (:attr:`Records.rank`,
:attr:`SelectedRecords.ranks`), and :attr:`Job.ranked` says whether to write
that label (only for a run of several ranks: a one-process export has no
rank column).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikestore._atomic_files import check_folder
from spikestore._format import dtypes
from spikestore._read.run import Run
from spikestore._read.run import open as open_run
from spikestore._read.segment import Segment
from spikestore._read.stream import Stream
from spikestore.errors import InvalidArgumentError, StreamNotFoundError

__all__ = ["Job", "Piece", "Progress", "Records", "SelectedRecords", "as_run", "export_job", "is_spike_stream",
           "iter_records", "parse_steps", "select_records", "select_streams", "selected_counts",
           "selected_total", "spike_events", "step_mask"]

#: ``progress(done, total)``, both in records; called after every block.
Progress = Callable[[int, int], None]


@dataclass
class Records:
    """Selected records of one stored chunk of one segment, decoded as exporters write them."""

    stream: Stream
    rank: int  # the rank that recorded them (0 in a one-process store)
    segment: Segment
    values: np.ndarray  # [k, *shape], dtypes.export_dtype of the logical dtype (bfloat16 as float32)
    steps: np.ndarray
    calls: np.ndarray
    times: np.ndarray


@dataclass
class Job:
    """One export: the open run, what to export, and progress bookkeeping."""

    run: Run
    out: Path
    steps: tuple[int | None, int | None]
    keys: list[str]
    total: int
    progress: Progress | None = None
    done: int = field(default=0)

    @property
    def ranked(self) -> bool:
        """Whether the run was recorded by several ranks, so every exported record is labelled with its rank."""
        return len(self.run.ranks) > 1

    def advance(self, records: int) -> None:
        """Count ``records`` more as exported and report progress."""
        self.done += records
        report(self.progress, self.done, self.total)


@contextlib.contextmanager
def export_job(store: Run | str | os.PathLike[str], out: str | os.PathLike[str], *,
               streams: list[str] | None, steps: str | tuple[int | None, int | None] | None,
               progress: Progress | None, overwrite: bool) -> Iterator[Job]:
    """Validate the arguments, open the run (closing it after if we opened it), count the work."""
    path = Path(out)
    ensure_new(path, overwrite)
    rng = parse_steps(steps)
    run, owned = as_run(store)
    try:
        keys = select_streams(run, streams)
        total = sum(selected_total(run[k], rng) for k in keys)
        yield Job(run, path, rng, keys, total, progress)
    finally:
        if owned:
            run.close()


def as_run(store: Run | str | os.PathLike[str], *,
           storage_options: dict[str, Any] | None = None) -> tuple[Run, bool]:
    """The run to export, and whether this call opened it (and must close it).

    ``store`` may be a URL (``s3://bucket/run.zarr``): a
    :class:`~spikestore.backends.StoreURL` carries its ``storage_options``,
    or pass them here.
    """
    if isinstance(store, Run):
        return store, False
    return open_run(store, storage_options=storage_options), True


def parse_steps(steps: str | tuple[int | None, int | None] | None) -> tuple[int | None, int | None]:
    """``"A:B"``, ``"A:"``, ``":B"`` or a tuple -> (start, stop), stop exclusive."""
    if steps is None:
        return None, None
    if isinstance(steps, tuple):
        return steps
    try:
        a, b = steps.split(":")
        return (int(a) if a.strip() else None, int(b) if b.strip() else None)
    except ValueError:
        raise InvalidArgumentError(f"steps must look like 'A:B' (either side may be empty), not {steps!r}") from None


def select_streams(run: Run, streams: list[str] | None) -> list[str]:
    """Stream keys matching ``streams`` (exact keys or shell patterns like ``output/*``)."""
    if not streams:
        return run.streams
    keys: list[str] = []
    for pattern in streams:
        hits = [k for k in run.streams if k == pattern or fnmatch.fnmatchcase(k, pattern)]
        if not hits:
            raise StreamNotFoundError(
                f"no stream of {run.path} matches {pattern!r}; streams are: {', '.join(run.streams)}")
        keys.extend(k for k in hits if k not in keys)
    return keys


def step_mask(steps: np.ndarray, rng: tuple[int | None, int | None]) -> np.ndarray:
    """Which of ``steps`` fall in ``rng`` (start inclusive, stop exclusive)."""
    keep = np.ones(len(steps), dtype=bool)
    if rng[0] is not None:
        keep &= steps >= rng[0]
    if rng[1] is not None:
        keep &= steps < rng[1]
    return keep


def selected_counts(stream: Stream, steps: tuple[int | None, int | None],
                    segments: list[Segment] | None = None) -> list[int]:
    """Selected records in each of ``segments`` of ``stream`` (default: all its segments)."""
    all_steps = stream.steps
    return [int(step_mask(all_steps[stream.record_positions(seg)], steps).sum())
            for seg in (stream.segments if segments is None else segments)]


def selected_total(stream: Stream, steps: tuple[int | None, int | None]) -> int:
    """Selected records of ``stream`` over every rank that recorded it (what progress counts)."""
    return int(step_mask(stream.steps, steps).sum())


def iter_records(stream: Stream, steps: tuple[int | None, int | None] = (None, None),
                 segments: list[Segment] | None = None) -> Iterator[Records]:
    """Decode a stream one stored chunk at a time, keeping only records in the step range.

    Memory is bounded by one decoded chunk, whatever the store's size; a
    chunk without a selected record is not read at all. ``segments`` limits
    the pass to some of the stream's segments (default: all, in the order
    of :attr:`Stream.segments <spikestore.Stream.segments>`: rank by rank).
    """
    all_steps, all_calls, all_times = stream.steps, stream.calls, stream.times
    for seg in stream.segments if segments is None else segments:
        for block in seg.blocks():
            g = stream.record_positions(seg, block.start, block.stop)
            sel = step_mask(all_steps[g], steps)
            if not sel.any():
                continue
            values = dtypes.export_values(block.values(), seg.doc["dtype"])
            g = g[sel]
            yield Records(stream, seg.rank, seg, values[sel], all_steps[g], all_calls[g], all_times[g])


@dataclass
class Piece:
    """Exported records that share one array of the output (an NPZ member, an HDF5 dataset).

    In a one-process run, one segment; in a run of several ranks, every
    rank's segments of one shape and dtype, so that ranks that recorded the
    same shapes give one array, not one per rank.
    """

    shape: tuple[int, ...]
    dtype: str  # the stored (logical) dtype, e.g. "bfloat16"
    segments: list[Segment] = field(default_factory=list)
    count: int = 0  # selected records

    def records(self, stream: Stream, steps: tuple[int | None, int | None]) -> Iterator[Records]:
        """The piece's selected records of ``stream``, in its order (rank by rank, then record order)."""
        return iter_records(stream, steps, self.segments)


@dataclass
class SelectedRecords:
    """The selected records of one stream over every rank that recorded it, in export order
    (rank by rank, each in its record order): the arrays it is cut into and one entry per record."""

    pieces: list[Piece]
    steps: np.ndarray
    calls: np.ndarray
    times: np.ndarray
    ranks: np.ndarray
    piece: np.ndarray  # the number of the piece that holds each record (int32)


def select_records(stream: Stream, steps: tuple[int | None, int | None], ranked: bool) -> SelectedRecords:
    """Cut the selected records of ``stream`` into :class:`Piece` s (by shape and dtype when ``ranked``)."""
    pieces: list[Piece] = []
    numbers: dict[tuple[tuple[int, ...], str], int] = {}
    segs = stream.segments
    positions = [stream.record_positions(seg) for seg in segs]
    number = []
    for seg, n in zip(segs, selected_counts(stream, steps), strict=True):
        kind = (tuple(seg.shape), seg.doc["dtype"])
        k = numbers.get(kind) if ranked else None
        if n and k is None:
            k = len(pieces)
            pieces.append(Piece(*kind))
            numbers[kind] = k
        if n and k is not None:
            pieces[k].segments.append(seg)
            pieces[k].count += n
        number.append(np.full(seg.count, -1 if k is None else k, np.int32))
    order = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    keep = step_mask(stream.steps[order], steps)
    at = order[keep]
    return SelectedRecords(pieces, stream.steps[at], stream.calls[at], stream.times[at], stream.ranks[at],
                           np.concatenate(number)[keep] if number else np.zeros(0, np.int32))


def spike_events(block: Records, kind: str) -> dict[str, np.ndarray]:
    """Coordinates of every spike (value != 0) in a block, one entry per spike.

    Returns arrays ``record`` (row in the block), ``t`` (time bin within the
    step: the T axis in multi-step mode, the call number otherwise),
    ``batch`` and ``neuron`` (flattened over the remaining axes).
    ``kind`` is the record's :meth:`RecordLayout.kind <spikestore._format.layout.RecordLayout.kind>`.
    """
    v = block.values
    k = v.shape[0]
    if kind == "m":
        flat = v.reshape(k, v.shape[1], v.shape[2], -1)
    elif kind == "s":
        flat = v.reshape(k, 1, v.shape[1], -1)
    else:
        flat = v.reshape(k, 1, 1, -1)
    rec, t, batch, neuron = np.nonzero(flat)
    if kind != "m":
        t = block.calls[rec].astype(np.int64)
    return {"record": rec, "t": t, "batch": batch, "neuron": neuron}


def is_spike_stream(stream: Stream) -> bool:
    """A stream whose records are all bit-packed (0/1), on every rank, is exported as spike events."""
    segments = stream.segments
    return bool(segments) and all(seg.encoding == "bits" for seg in segments)


def report(progress: Progress | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` when there is a callback."""
    if progress is not None:
        progress(done, total)


def ensure_new(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing ``out`` unless asked to."""
    if out.exists() and not overwrite:
        raise InvalidArgumentError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    check_folder(out)  # (before any work: some exporters keep scratch files next to the output)
