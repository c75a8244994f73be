"""What every exporter shares: stream and step selection, chunked iteration, progress."""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikestore.errors import InvalidArgumentError, StreamNotFoundError
from spikestore._read.run import Run, Segment, Stream
from spikestore._read.run import open as open_run

__all__ = ["Block", "Job", "Progress", "as_run", "export_job", "iter_blocks", "layout", "parse_steps",
           "select_streams", "selected_counts", "step_mask"]

#: ``progress(done, total)``, both in records; called after every block.
Progress = Callable[[int, int], None]


@dataclass
class Block:
    """Consecutive records of one segment, decoded (at most one chunk's worth)."""

    stream: Stream
    segment: Segment
    values: np.ndarray  # [k, *shape], original dtype (bfloat16 as float32)
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


def _mask(stream: Stream, steps: tuple[int | None, int | None]) -> np.ndarray:
    return step_mask(stream.steps, steps)


def selected_counts(stream: Stream, steps: tuple[int | None, int | None]) -> list[int]:
    """Selected records in each segment of ``stream``."""
    keep = _mask(stream, steps)
    return [int(keep[seg.start:seg.stop].sum()) for seg in stream.segments]


def iter_blocks(stream: Stream, steps: tuple[int | None, int | None] = (None, None)) -> Iterator[Block]:
    """Decode a stream chunk by chunk, keeping only records in the step range.

    Memory is bounded by one decoded chunk, whatever the store's size.
    """
    keep = _mask(stream, steps)
    all_steps, all_calls, all_times = stream.steps, stream.calls, stream.times
    for seg in stream.segments:
        rpc = seg.chunk_records
        for lo in range(0, seg.count, rpc):
            hi = min(seg.count, lo + rpc)
            sel = keep[seg.start + lo:seg.start + hi]
            if not sel.any():
                continue
            values = seg.read(lo, hi)
            if seg.doc["dtype"] == "bfloat16":
                values = values.astype(np.float32)
            g = slice(seg.start + lo, seg.start + hi)
            yield Block(stream, seg, values[sel], all_steps[g][sel], all_calls[g][sel], all_times[g][sel])


def layout(stream: Stream, shape: tuple[int, ...]) -> str:
    """How a record's axes read: ``"m"`` = [T, N, neurons...], ``"s"`` = [N, neurons...],
    ``"n"`` = [neurons...] (no batch axis), from the monitor's selection or the shape."""
    sel = stream.selection or {}
    mode = sel.get("step_mode")
    if mode == "m" and len(shape) >= 2:
        return "m"
    if mode == "s" and len(shape) >= 1:
        return "s"
    if len(shape) >= 3:
        return "m"
    return "s" if len(shape) == 2 else "n"


def spike_events(block: Block, kind: str) -> dict[str, np.ndarray]:
    """Coordinates of every spike (value != 0) in a block, one entry per spike.

    Returns arrays ``record`` (row in the block), ``t`` (time bin within the
    step: the T axis in multi-step mode, the call number otherwise),
    ``batch`` and ``neuron`` (flattened over the remaining axes).
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
    if progress is not None:
        progress(done, total)


def ensure_new(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise InvalidArgumentError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")


def jsonable(x: Any) -> Any:
    import json

    return json.dumps(x, sort_keys=True)
