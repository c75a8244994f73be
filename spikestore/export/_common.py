"""What every exporter shares: stream and step selection, chunked iteration, progress.

Exporters read records through :func:`iter_records`, which walks a stream
with the read side's one chunk iterator
(:func:`spikestore._read.segment.iter_blocks`) and keeps the records of the
selected steps; what a record's axes mean comes from
:attr:`spikestore.Stream.layout`; and they publish their output with
:func:`spikestore._files.replacing`, so a failed export leaves nothing
behind and an older output stays as it was.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikestore._files import check_folder
from spikestore._format import dtypes
from spikestore._read.run import Run
from spikestore._read.run import open as open_run
from spikestore._read.segment import Segment, iter_blocks
from spikestore._read.stream import Stream
from spikestore.errors import InvalidArgumentError, StreamNotFoundError

__all__ = ["Job", "Progress", "Records", "as_run", "export_job", "is_spike_stream", "iter_records",
           "parse_steps", "select_streams", "selected_counts", "spike_events", "step_mask"]

#: ``progress(done, total)``, both in records; called after every block.
Progress = Callable[[int, int], None]


@dataclass
class Records:
    """Selected records of one stored chunk of one segment, decoded as exporters write them."""

    stream: Stream
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
        total = sum(sum(selected_counts(run[k], rng)) for k in keys)
        yield Job(run, path, rng, keys, total, progress)
    finally:
        if owned:
            run.close()


def as_run(store: Run | str | os.PathLike[str]) -> tuple[Run, bool]:
    """The run to export, and whether this call opened it (and must close it)."""
    if isinstance(store, Run):
        return store, False
    return open_run(Path(store)), True


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


def selected_counts(stream: Stream, steps: tuple[int | None, int | None]) -> list[int]:
    """Selected records in each segment of ``stream``."""
    keep = step_mask(stream.steps, steps)
    return [int(keep[seg.start:seg.stop].sum()) for seg in stream.segments]


def iter_records(stream: Stream, steps: tuple[int | None, int | None] = (None, None),
                 segments: list[Segment] | None = None) -> Iterator[Records]:
    """Decode a stream one stored chunk at a time, keeping only records in the step range.

    Memory is bounded by one decoded chunk, whatever the store's size; a
    chunk without a selected record is not read at all. ``segments`` limits
    the pass to some of the stream's segments (default: all).
    """
    keep = step_mask(stream.steps, steps)
    all_steps, all_calls, all_times = stream.steps, stream.calls, stream.times
    for block in iter_blocks(stream.segments if segments is None else segments):
        g = slice(block.start, block.stop)
        sel = keep[g]
        if not sel.any():
            continue
        values = dtypes.export_values(block.values(), block.segment.doc["dtype"])
        yield Records(stream, block.segment, values[sel], all_steps[g][sel], all_calls[g][sel], all_times[g][sel])


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
    """A stream whose records are all bit-packed (0/1) is exported as spike events."""
    return bool(stream.segments) and all(seg.encoding == "bits" for seg in stream.segments)


def report(progress: Progress | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` when there is a callback."""
    if progress is not None:
        progress(done, total)


def ensure_new(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing ``out`` unless asked to."""
    if out.exists() and not overwrite:
        raise InvalidArgumentError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    check_folder(out)  # (before any work: some exporters keep scratch files next to the output)
