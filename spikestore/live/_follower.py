"""``Follower``: follow a run while it is written, decoding each committed record once.

A follower keeps, for each stream and each rank's part of it, how many
records it has consumed. :meth:`Follower.refresh` refreshes the run
(:meth:`Run.refresh <spikestore.Run.refresh>`: the documents), reads the
records committed since (only those: the partly filled last chunk that grew
is decoded from its first new row) and hands them, reduced to a few numbers
per record, to bounded accumulators (:mod:`spikestore.live._accumulators`),
per rank and merged. What it holds therefore depends on ``history``,
``window`` and the number of neurons, never on the length of the run.

Each rank's part is read through ``run.rank(r)``, a run of one part, so a
record's step comes from the index chunks that hold it alone
(:meth:`Stream.index <spikestore.Stream.index>` with a range), not from the
whole index of a run of several ranks.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikestore._read.run import Run
from spikestore._read.run import open as open_run
from spikestore._read.segment import Segment
from spikestore._read.stream import Stream
from spikestore.backends import StoreURL
from spikestore.errors import InvalidArgumentError, StoreNotFoundError
from spikestore.live._accumulators import Moments, NeuronWindow, StepHistory, record_moments
from spikestore.live._snapshot import Snapshot, StreamSummary

__all__ = ["MAX_VALUES", "Follower"]

#: Decoded values a follower holds at once while reading new records (bits decode to float32: 16 MiB).
MAX_VALUES = 1 << 22


@dataclass
class _Growth:
    """Records per second between the last two looks that saw the count grow."""

    last: tuple[float, int] | None = None
    rate: float | None = None

    def seen(self, now: float, records: int) -> None:
        if self.last is not None and records == self.last[1]:
            return
        if self.last is not None and now > self.last[0]:
            self.rate = (records - self.last[1]) / (now - self.last[0])
        self.last = (now, records)


@dataclass
class _Summary:
    """The accumulators behind one :class:`StreamSummary` (one rank's part, or the merged stream)."""

    history: StepHistory
    window: NeuronWindow
    records: int = 0
    spikes: int = 0
    binary: bool = True
    has_segments: bool = False
    last_step: int | None = None
    latest: np.ndarray | None = None
    latest_key: tuple[int, int] = (-(2**62), -1)  # (step, rank) of :attr:`latest`: the last in record order
    growth: _Growth = field(default_factory=_Growth)
    nbytes: int = 0
    segment_bytes: int = 0

    def add(self, seg: Segment, values: np.ndarray, steps: np.ndarray, moments: Moments, rank: int,
            window: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Fold records ``values`` of ``seg`` (steps ``steps``, their :class:`Moments`) in; ``window``: the
        steps and per-neuron spike counts of those of them that fall in the neuron window (binary segments)."""
        binary = seg.encoding == "bits"
        self.binary = self.binary and binary
        self.has_segments = True
        self.history.add(steps, moments)
        self.records += len(values)
        if binary:
            self.spikes += round(float((moments.n * moments.mean).sum()))
        if window is not None:
            self.window.add(window[0], window[1], _points(seg))
        last = (int(steps[-1]), rank)
        self.last_step = last[0] if self.last_step is None else max(self.last_step, last[0])
        if last >= self.latest_key:
            self.latest_key, self.latest = last, values[-1].copy()

    def summary(self, key: str, ranks: tuple[int, ...], per_rank: dict[int, StreamSummary]) -> StreamSummary:
        binary = self.binary and self.has_segments
        h = self.history
        counts, points = self.window.totals()
        window_ready = binary and points > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = counts / points if window_ready else None
        return StreamSummary(
            key=key, binary=binary, records=self.records, last_step=self.last_step, ranks=ranks,
            steps=_frozen(h.first.copy()), rate=_frozen(h.rate()) if binary else None,
            mean=None if binary else _frozen(h.mean()), std=None if binary else _frozen(h.std()),
            neurons=self.window.neurons if binary else 0, neuron_rates=None if rates is None else _frozen(rates),
            dead_fraction=float(np.mean(counts == 0)) if window_ready and len(counts) else None,
            saturated_fraction=float(np.mean(counts == points)) if window_ready and len(counts) else None,
            bytes_on_disk=self.nbytes,
            bits_per_spike=8 * self.segment_bytes / self.spikes if binary and self.spikes else None,
            records_per_second=self.growth.rate, per_rank=per_rank,
            latest=None if self.latest is None else _frozen(self.latest.copy()),
            window_steps=len(self.window))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _neurons(seg: Segment) -> int:
    """Values per record along the last axis (1 for scalar records)."""
    return seg.shape[-1] if seg.shape else 1


def _points(seg: Segment) -> int:
    """Values per neuron in one record of ``seg``."""
    n = _neurons(seg)
    return seg.values_per_record // n if n else 0


class _StreamState:
    """What a follower keeps of one stream: each rank's part and the merged stream."""

    def __init__(self, key: str, window: int, history: int) -> None:
        self.key = key
        self._window, self._history = window, history
        self.merged = self._new()
        self.parts: dict[int, _Summary] = {}
        self.consumed: dict[int, int] = {}
        self.sized: set[int] = set()

    def _new(self) -> _Summary:
        return _Summary(StepHistory(self._history), NeuronWindow(self._window))

    def consume(self, rank: int, stream: Stream, max_values: int) -> int:
        """Read the records of rank ``rank``'s part (``stream``, a run of one part) committed since the last
        call; the number read. ``-1``: the part holds fewer records than were read (the store was replaced)."""
        part = self.parts.get(rank)
        if part is None:
            part = self.parts[rank] = self._new()
            self.consumed[rank] = 0
        done, n = self.consumed[rank], len(stream)
        if n < done:
            return -1
        for seg in stream.segments:
            if seg.stop <= done:
                continue
            step = max(1, min(seg.chunk_records, max_values // max(1, seg.values_per_record)))
            lo = max(done, seg.start)
            while lo < seg.stop:
                # Up to the end of the stored chunk (a piece never crosses one) and at most `step` records.
                chunk_end = seg.start + ((lo - seg.start) // seg.chunk_records + 1) * seg.chunk_records
                hi = min(seg.stop, chunk_end, lo + step)
                self._add(rank, part, seg, seg.read(lo - seg.start, hi - seg.start), stream.index("step", lo, hi))
                lo = hi
        read = n - done
        self.consumed[rank] = n
        return read

    def _add(self, rank: int, part: _Summary, seg: Segment, values: np.ndarray, steps: np.ndarray) -> None:
        moments = record_moments(values, seg.encoding == "bits")
        windows: list[tuple[np.ndarray, np.ndarray] | None] = [None, None]
        if seg.encoding == "bits":
            wanted = [part.window.wanted(steps), self.merged.window.wanted(steps)]
            either = wanted[0] | wanted[1]
            if either.any():  # count per neuron only the records some window keeps
                picked = values[either]
                counts = np.count_nonzero(picked.reshape(len(picked), -1, _neurons(seg)), axis=1)
                windows = [(steps[w], counts[w[either]]) for w in wanted]
        part.add(seg, values, steps, moments, rank, windows[0])
        self.merged.add(seg, values, steps, moments, rank, windows[1])

    def sizes(self, rank: int, stream: Stream) -> None:
        """Bytes on disk of rank ``rank``'s part: the stream's and its segments' (re-counted after growth)."""
        part = self.parts[rank]
        self.sized.add(rank)
        part.nbytes = stream.nbytes()
        part.segment_bytes = sum(seg.nbytes() for seg in stream.segments)

    def summary(self, now: float) -> StreamSummary:
        ranks = tuple(sorted(self.parts))
        m = self.merged
        m.nbytes = sum(p.nbytes for p in self.parts.values())
        m.segment_bytes = sum(p.segment_bytes for p in self.parts.values())
        for p in self.parts.values():
            p.growth.seen(now, p.records)
        m.growth.seen(now, m.records)
        per_rank = {r: p.summary(self.key, (r,), {}) for r, p in sorted(self.parts.items())} if len(ranks) > 1 else {}
        return m.summary(self.key, ranks, per_rank)


class Follower:
    """Follow a run while its writer appends to it (or a finished run): :meth:`refresh` gives a :class:`Snapshot`.

    Parameters
    ----------
    source
        The store's path or URL, or a :class:`~spikestore.Run` already
        open (the follower reads through it and leaves it open).
    storage_options
        For a URL, as :func:`spikestore.open` takes them.
    window
        Steps (the last ones seen, by step number) behind the per-neuron
        rates and the dead and saturated fractions.
    history
        At most this many points per stream in :attr:`StreamSummary.steps`
        (neighbouring steps merge into one point beyond it).
    backend
        As :func:`spikestore.open` takes it (``None``: from the path).

    Each refresh decodes the records committed since the previous one
    only, and reads nothing else but the documents and the sizes of the
    streams that grew. A follower reads committed data only and never
    writes. :meth:`refresh` may be called from any thread (one at a time).
    """

    def __init__(self, source: str | os.PathLike[str] | StoreURL | Run, *,
                 storage_options: dict[str, Any] | None = None, window: int = 100, history: int = 2000,
                 backend: str | None = None) -> None:
        for name, value in (("window", window), ("history", history)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"Follower: {name} must be an integer >= 1, not {value!r}")
        self.window, self.history = window, history
        if isinstance(source, Run):
            if storage_options is not None or backend is not None:
                raise InvalidArgumentError("Follower: storage_options and backend apply to a path or URL, "
                                           "not to a Run already open")
            self.run, self._owned = source, False
        else:
            self.run, self._owned = open_run(source, backend=backend, storage_options=storage_options), True
        self._created = self.run.doc["created"]
        self._streams: dict[str, _StreamState] = {}
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        """The store's path or URL."""
        return str(self.run.path)

    def refresh(self) -> Snapshot:
        """Read what was committed since the last refresh and summarise every stream.

        Raises what :meth:`Run.refresh <spikestore.Run.refresh>` and the
        reader raise (a store that went away, a damaged chunk).
        """
        with self._lock:
            began = time.perf_counter()
            run = self.run
            run.refresh()
            if run.doc["created"] != self._created:  # another store at the same path: start over
                self._created, self._streams = run.doc["created"], {}
            parts = self._parts()
            now = time.monotonic()
            new = 0
            streams = {}
            for key in run.streams:
                state, got = self._consume(key, parts)
                new += got
                streams[key] = state.summary(now)
            writers = {r: dict(p.writer) for r, p in parts.items()}
            failed: dict[str, str] = {}
            for w in writers.values():
                failed.update(w.get("failed_streams") or {})
            return Snapshot(path=self.path, time=time.time(), writer=dict(run.writer), failed=failed,
                            streams=streams, refresh_seconds=time.perf_counter() - began, new_records=new,
                            writers=writers, dropped=sum(int(w.get("dropped", 0)) for w in writers.values()))

    def _parts(self) -> dict[int, Run]:
        """Each rank's part that exists now, as a run of one part."""
        parts = {}
        for r in self.run.ranks:
            try:
                parts[r] = self.run.rank(r)
            except StoreNotFoundError:  # a rank still opening its part
                continue
        return parts

    def _consume(self, key: str, parts: dict[int, Run]) -> tuple[_StreamState, int]:
        """Read stream ``key``'s new records in every part; its state and the records read."""
        state = self._streams.get(key)
        if state is None:
            state = self._streams[key] = _StreamState(key, self.window, self.history)
        new = 0
        for r, part in parts.items():
            if key not in part:
                continue
            stream = part[key]
            got = state.consume(r, stream, MAX_VALUES)
            if got < 0:  # fewer records than read: the stream was written again from the start
                del self._streams[key]
                return self._consume(key, parts)
            if got or r not in state.sized:
                state.sizes(r, stream)
            new += got
        return state, new

    def close(self) -> None:
        """Close the run, when the follower opened it."""
        if self._owned:
            self.run.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<spikestore.live.Follower {self.path!r}: {len(self._streams)} streams>"
