"""What a follower keeps of each stream: how far it has read each rank's part, and the accumulators.

:class:`StreamState` reads the records of a rank's part committed since its
last call, stored chunk by stored chunk: spikes of a ``bits`` segment are
counted on the packed rows, and unpacked to bools (not to their dtype) for
the per-neuron counts behind the entropy bounds
(:class:`~spikestore.codecs._bounds.SpikeCounts`); only the records a neuron
window keeps (and the last one) are decoded; other records are decoded and
reduced at once. Each piece goes to the part's :class:`Accumulated` and to
the merged one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spikestore._read.segment import Segment
from spikestore._read.stream import Stream
from spikestore.codecs._bounds import SpikeCounts
from spikestore.live._accumulators import (
    Moments,
    NeuronWindow,
    StepHistory,
    count_bits,
    record_moments,
    spike_moments,
)
from spikestore.live._snapshot import StreamSummary

__all__ = ["SIZES_EVERY", "SIZES_SHARE", "STEP_BATCH", "Accumulated", "Growth", "StepReader", "StreamState"]

#: Steps read from a stream's index at once (8 bytes each).
STEP_BATCH = 1 << 16
#: Seconds between two counts of a growing stream's bytes on disk (counting lists its files).
SIZES_EVERY = 5.0
#: The most of its time a follower spends counting bytes on disk: a count that took t seconds waits t / share.
SIZES_SHARE = 0.05

#: The steps and per-neuron spike counts of records that a neuron window keeps (None: none of them).
Window = tuple[np.ndarray, np.ndarray] | None


@dataclass
class Growth:
    """Records per second between the last two looks that saw the count grow."""

    last: tuple[float, int] | None = None
    rate: float | None = None

    def seen(self, now: float, records: int) -> None:
        """Note ``records`` committed at ``now`` (``time.monotonic()``)."""
        if self.last is not None and records == self.last[1]:
            return
        if self.last is not None and now > self.last[0]:
            self.rate = (records - self.last[1]) / (now - self.last[0])
        self.last = (now, records)


@dataclass
class Accumulated:
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
    growth: Growth = field(default_factory=Growth)
    nbytes: int = 0
    segment_bytes: int = 0
    neurons: int = 0
    coding: SpikeCounts | None = None  # per-neuron counts of the spikes, for their entropy bounds
    coding_from: tuple[int, int] = (-1, -1)  # (rank, record) that the next counted record follows

    def count_spikes(self, seg: Segment, rank: int, lo: int, spikes: np.ndarray) -> None:
        """Count records ``lo ..`` (positions in rank ``rank``'s part) of ``seg``, as bools, for the entropy
        bounds; a record follows the one counted before it only when it is the next of the same part."""
        if self.coding is None or self.coding.dims != seg.dims:
            self.coding = SpikeCounts(seg.dims)
        if self.coding_from != (rank, lo):
            self.coding.reset_sequence()
        self.coding.add_records(spikes)
        self.coding_from = (rank, lo + len(spikes))

    def add(self, seg: Segment, steps: np.ndarray, moments: Moments, rank: int,
            window: tuple[np.ndarray, np.ndarray] | None, last: np.ndarray) -> None:
        """Fold records of ``seg`` in: their steps ``steps`` and :class:`Moments`; ``window``: the steps and
        per-neuron spike counts of those that fall in the neuron window (binary segments); ``last``: the last
        of them."""
        binary = seg.encoding == "bits"
        self.binary = self.binary and binary
        self.has_segments = True
        self.neurons = _neurons(seg)
        self.history.add(steps, moments)
        self.records += len(steps)
        if binary:
            self.spikes += round(float((moments.n * moments.mean).sum()))
        if window is not None:
            self.window.add(window[0], window[1], _points(seg))
        top = int(steps.max())
        self.last_step = top if self.last_step is None else max(self.last_step, top)
        key = (int(steps[-1]), rank)
        if key >= self.latest_key:
            self.latest_key, self.latest = key, last

    def summary(self, key: str, ranks: tuple[int, ...], per_rank: dict[int, StreamSummary]) -> StreamSummary:
        """What is accumulated, as a frozen :class:`StreamSummary` with arrays of its own."""
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
            neurons=self.neurons, neuron_rates=None if rates is None else _frozen(rates),
            dead_fraction=float(np.mean(counts == 0)) if window_ready and len(counts) else None,
            saturated_fraction=float(np.mean(counts == points)) if window_ready and len(counts) else None,
            bytes_on_disk=self.nbytes,
            bits_per_spike=8 * self.segment_bytes / self.spikes if binary and self.spikes else None,
            bits_over_bounds=self._over_bounds() if binary else None,
            records_per_second=self.growth.rate, per_rank=per_rank,
            latest=None if self.latest is None else _frozen(self.latest.copy()),
            window_steps=len(self.window))


    def _over_bounds(self) -> dict[str, float] | None:
        """Bits of the stored chunks over each entropy bound of the spikes counted (None: nothing to divide by)."""
        if self.coding is None or not self.coding.spikes:
            return None
        bounds = self.coding.bounds()
        return {k: 8 * self.segment_bytes / v for k, v in bounds.items() if v}


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


class StepReader:
    """The steps of a one-part stream's records, read from its index :data:`STEP_BATCH` records at a time
    (an index chunk is read once, however many stored record chunks it spans)."""

    def __init__(self, stream: Stream, count: int) -> None:
        self._stream, self._count = stream, count
        self._lo, self._steps = 0, np.zeros(0, np.int64)

    def between(self, lo: int, hi: int) -> np.ndarray:
        """Steps of records ``lo:hi``."""
        if not (self._lo <= lo and hi <= self._lo + len(self._steps)):
            self._lo = lo
            self._steps = self._stream.index("step", lo, min(self._count, max(hi, lo + STEP_BATCH)))
        return self._steps[lo - self._lo:hi - self._lo]


class StreamState:
    """What a follower keeps of one stream: each rank's part and the merged stream."""

    def __init__(self, key: str, window: int, history: int) -> None:
        self.key = key
        self._window, self._history = window, history
        self.merged = self._new()
        self.parts: dict[int, Accumulated] = {}
        self.consumed: dict[int, int] = {}
        self.counted: dict[int, tuple[float, float]] = {}  # rank -> (when its sizes were counted, seconds it took)
        self.dirty: dict[int, bool] = {}  # rank -> grew since its sizes were counted

    def _new(self) -> Accumulated:
        return Accumulated(StepHistory(self._history), NeuronWindow(self._window))

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
        steps = StepReader(stream, n)
        for seg in stream.segments:
            if seg.stop <= done:
                continue
            step = max(1, min(seg.chunk_records, max_values // max(1, seg.values_per_record)))
            lo = max(done, seg.start)
            while lo < seg.stop:
                # Up to the end of the stored chunk (a piece never crosses one) and at most `step` records.
                chunk_end = seg.start + ((lo - seg.start) // seg.chunk_records + 1) * seg.chunk_records
                hi = min(seg.stop, chunk_end, lo + step)
                if seg.encoding == "bits" and seg.stored_dtype == np.uint8:  # counted packed, decoded in part
                    at = (lo - seg.start) % seg.chunk_records
                    rows = seg.chunk_rows((lo - seg.start) // seg.chunk_records, at, at + hi - lo)
                    self._add_spikes(rank, part, seg, rows, steps.between(lo, hi))
                    self._count_spikes(rank, part, seg, lo,
                                       np.unpackbits(rows, axis=-1, count=_neurons(seg), bitorder="little"))
                else:
                    values = seg.read(lo - seg.start, hi - seg.start)
                    self._add(rank, part, seg, values, steps.between(lo, hi))
                    if seg.encoding == "bits":
                        self._count_spikes(rank, part, seg, lo, values != 0)
                lo = hi
        read = n - done
        self.consumed[rank] = n
        return read

    def _add(self, rank: int, part: Accumulated, seg: Segment, values: np.ndarray, steps: np.ndarray) -> None:
        """Fold decoded records in (any encoding)."""
        binary = seg.encoding == "bits"
        moments = record_moments(values, binary)
        windows = self._windows(part, seg, steps, lambda which: values[which]) if binary else (None, None)
        last = values[-1].copy()
        part.add(seg, steps, moments, rank, windows[0], last)
        self.merged.add(seg, steps, moments, rank, windows[1], last)

    def _add_spikes(self, rank: int, part: Accumulated, seg: Segment, rows: np.ndarray, steps: np.ndarray) -> None:
        """Fold stored rows of a ``bits`` segment in: spikes counted on the packed bits; only the records a
        neuron window keeps, and the last one, are decoded."""
        moments = spike_moments(count_bits(rows, _neurons(seg)), seg.values_per_record)
        windows = self._windows(part, seg, steps, lambda which: seg.decode_rows(rows[which]))
        last = seg.decode_rows(rows[-1:])[0]
        part.add(seg, steps, moments, rank, windows[0], last)
        self.merged.add(seg, steps, moments, rank, windows[1], last)

    def _count_spikes(self, rank: int, part: Accumulated, seg: Segment, lo: int, spikes: np.ndarray) -> None:
        """Count the spikes of records ``lo ..`` of rank ``rank``'s part for the entropy bounds, in the part
        and in the merged stream (each unpacked once for both)."""
        spikes = spikes.view(np.bool_) if spikes.dtype == np.uint8 else spikes
        part.count_spikes(seg, rank, lo, spikes)
        self.merged.count_spikes(seg, rank, lo, spikes)

    def _windows(self, part: Accumulated, seg: Segment, steps: np.ndarray,
                 decode: Callable[[np.ndarray], np.ndarray]) -> tuple[Window, Window]:
        """The steps and per-neuron spike counts of the records that the part's and the merged neuron window
        keep (``decode(mask)`` gives those records)."""
        wanted = (part.window.wanted(steps), self.merged.window.wanted(steps))
        either = wanted[0] | wanted[1]
        if not either.any():
            return None, None
        picked = decode(either)
        counts = np.count_nonzero(picked.reshape(len(picked), -1, _neurons(seg)), axis=1)
        mine, merged = ((steps[w], counts[w[either]]) for w in wanted)
        return mine, merged

    def sizes(self, rank: int, stream: Stream, grew: bool, now: float, *, writing: bool) -> None:
        """Count the bytes on disk of rank ``rank``'s part (the stream's and its segments') when due.

        Counting lists every file of the stream, which grows with the run, so
        while its writer is ``writing``, a part that grew is counted again no
        sooner than :data:`SIZES_EVERY` seconds after its last count, nor than
        that count's duration divided by :data:`SIZES_SHARE`: at most that
        share of the follower's time. Once the writer is done, at once.
        """
        last, took = self.counted.get(rank, (None, 0.0))
        self.dirty[rank] = self.dirty.get(rank, True) or grew
        if not self.dirty[rank]:
            return
        if writing and last is not None and now - last < max(SIZES_EVERY, took / SIZES_SHARE):
            return
        began = time.perf_counter()
        part = self.parts[rank]
        part.nbytes = stream.nbytes()
        part.segment_bytes = sum(seg.nbytes() for seg in stream.segments)
        self.counted[rank] = (now, time.perf_counter() - began)
        self.dirty[rank] = False

    def summary(self, now: float) -> StreamSummary:
        """The merged summary, with each rank's in ``per_rank`` for a run of several ranks."""
        ranks = tuple(sorted(self.parts))
        m = self.merged
        m.nbytes = sum(p.nbytes for p in self.parts.values())
        m.segment_bytes = sum(p.segment_bytes for p in self.parts.values())
        for p in self.parts.values():
            p.growth.seen(now, p.records)
        m.growth.seen(now, m.records)
        per_rank = {r: p.summary(self.key, (r,), {}) for r, p in sorted(self.parts.items())} if len(ranks) > 1 else {}
        return m.summary(self.key, ranks, per_rank)
