"""Bounded accumulators that a follower feeds with each newly committed chunk.

:class:`StepHistory` keeps count, mean and spread per step, merging
neighbouring steps into one point when it holds more than its bound, so a
run of a million steps stays a few thousand points. :class:`NeuronWindow`
keeps each neuron's spike count over the last ``window`` steps seen, for the
per-neuron rates and the dead and saturated fractions. Both take records
already reduced to a few numbers each (:func:`record_moments`), so what they
hold never depends on how many records went in.

Spread is merged exactly (Chan et al.'s pairwise update of count, mean and
sum of squared deviations), not from sums of squares, so a stream whose
values sit far from zero keeps its standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikestore.errors import InvalidArgumentError

__all__ = ["Moments", "NeuronWindow", "StepHistory", "count_bits", "merge_groups", "record_moments", "spike_moments"]


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations from the mean (``m2``) of groups of values."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray


def record_moments(values: np.ndarray, binary: bool) -> Moments:
    """:class:`Moments` of each record of ``values`` (``[k, *shape]``), over all its values, in float64.

    Binary records count nonzero values: for 0/1 data the mean is the
    firing rate and ``m2 = s - s**2 / n`` exactly. Complex values count by
    magnitude.
    """
    k = len(values)
    flat = values.reshape(k, -1)
    if binary:
        return spike_moments(np.count_nonzero(flat, axis=1), flat.shape[1])
    n = np.full(k, float(flat.shape[1]))
    safe = np.maximum(n, 1.0)
    x = np.abs(flat) if np.iscomplexobj(flat) else flat
    x = x.astype(np.float64, copy=False)
    mean = x.sum(axis=1) / safe
    m2 = np.square(x - mean[:, None]).sum(axis=1)
    return Moments(n, mean, m2)


def spike_moments(spikes: np.ndarray, values: int) -> Moments:
    """:class:`Moments` of records of 0s and 1s holding ``spikes`` ones each among ``values`` values."""
    s = np.asarray(spikes, np.float64)
    n = np.full(len(s), float(values))
    safe = max(values, 1)
    return Moments(n, s / safe, s - s * s / safe)


def count_bits(rows: np.ndarray, width: int) -> np.ndarray:
    """Ones in each stored row of a ``bits`` segment (``uint8`` rows packed along the last axis, which holds
    ``width`` values), counted without unpacking; padding bits of the last byte are not counted."""
    k = len(rows)
    if width % 8 and rows.shape[-1]:
        rows = rows.copy()
        rows[..., -1] &= (1 << (width % 8)) - 1
    ones: np.ndarray = _ONES[rows.reshape(k, -1)].sum(axis=1, dtype=np.int64)
    return ones


#: Ones in each byte value.
_ONES = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def merge_groups(group: np.ndarray, size: int, m: Moments) -> Moments:
    """Merge the entries of ``m`` that share a ``group`` number (``0 .. size - 1``) into one each."""
    n = np.bincount(group, m.n, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.bincount(group, m.n * m.mean, size) / n, 0.0)
    dev = m.mean - mean[group]
    m2 = np.bincount(group, m.m2, size) + np.bincount(group, m.n * dev * dev, size)
    return Moments(n, mean, m2)


class StepHistory:
    """Count, mean and spread of values per step, in at most ``points`` points.

    Steps fall into bins ``step // width``; ``width`` starts at 1 (one point
    per step) and doubles whenever the bins outnumber ``points``, merging
    neighbours. A point is labelled with the first step it holds. Steps may
    arrive in any order (ranks of a run commit at their own pace).
    """

    def __init__(self, points: int) -> None:
        if points < 1:
            raise InvalidArgumentError(f"history must be >= 1 point, not {points!r}")
        self.points = points
        self.width = 1
        self.ids = np.zeros(0, np.int64)
        self.first = np.zeros(0, np.int64)
        self.moments = Moments(np.zeros(0), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, steps: np.ndarray, m: Moments) -> None:
        """Add records of steps ``steps`` with moments ``m`` (one entry per record)."""
        if not len(steps):
            return
        steps = np.asarray(steps, np.int64)
        ids = steps // self.width
        # Records of the last point or after it (a writer appending): rebin them with the last point alone.
        keep = len(self.ids) - 1 if len(self.ids) and ids.min() >= self.ids[-1] else 0
        old = self.moments
        self._rebin(np.concatenate([self.ids[keep:], ids]), np.concatenate([self.first[keep:], steps]),
                    Moments(*(np.concatenate([a[keep:], b]) for a, b in
                              ((old.n, m.n), (old.mean, m.mean), (old.m2, m.m2)))),
                    (self.ids[:keep], self.first[:keep], Moments(old.n[:keep], old.mean[:keep], old.m2[:keep])))
        while len(self.ids) > self.points:
            self.width *= 2
            self._rebin(self.ids // 2, self.first, self.moments)

    def _rebin(self, ids: np.ndarray, first: np.ndarray, m: Moments,
               before: tuple[np.ndarray, np.ndarray, Moments] | None = None) -> None:
        """Points: the entries ``ids``/``first``/``m`` merged by id, after the points ``before`` (kept as they
        are: every id in them is below every id in ``ids``)."""
        uniq, group = np.unique(ids, return_inverse=True)
        low = np.full(len(uniq), np.iinfo(np.int64).max, np.int64)
        np.minimum.at(low, group, first)
        merged = merge_groups(group, len(uniq), m)
        if before is None or not len(before[0]):
            self.ids, self.first, self.moments = uniq, low, merged
            return
        self.ids, self.first = np.concatenate([before[0], uniq]), np.concatenate([before[1], low])
        self.moments = Moments(*(np.concatenate([a, b]) for a, b in ((before[2].n, merged.n),
                                                                     (before[2].mean, merged.mean),
                                                                     (before[2].m2, merged.m2))))

    def mean(self) -> np.ndarray:
        """Mean of the values of each point."""
        return self.moments.mean.copy()

    def std(self) -> np.ndarray:
        """Standard deviation (``ddof=0``) of the values of each point (NaN for a point without values)."""
        n = self.moments.n
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.sqrt(np.maximum(self.moments.m2, 0.0) / n), np.nan)

    def rate(self) -> np.ndarray:
        """Mean of each point; NaN for a point without values (records of size 0)."""
        return np.where(self.moments.n > 0, self.moments.mean, np.nan)


class NeuronWindow:
    """Per-neuron spike counts of the last ``window`` distinct steps seen (by step number).

    For each step it keeps the spikes of each neuron (summed over its
    records and over every other axis of a record) and the number of time
    points each neuron had (the values per neuron of those records), so its
    memory is at most ``window * neurons`` counts.
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise InvalidArgumentError(f"window must be >= 1 step, not {window!r}")
        self.window = window
        self.neurons = 0
        self._steps: dict[int, tuple[np.ndarray, int]] = {}

    def __len__(self) -> int:
        return len(self._steps)

    def wanted(self, steps: np.ndarray) -> np.ndarray:
        """Which of records of ``steps`` would fall in the window (the rest need not be counted)."""
        known = np.fromiter(self._steps, np.int64, len(self._steps))
        every = np.union1d(known, steps)
        return steps >= every[max(0, len(every) - self.window)] if len(every) else np.zeros(len(steps), bool)

    def add(self, steps: np.ndarray, counts: np.ndarray, points: int) -> None:
        """Add records of ``steps`` with per-neuron spike ``counts`` (``[k, neurons]``), each record having
        ``points`` values per neuron. Records of a new neuron count start the window over."""
        if not len(steps):
            return
        if counts.shape[1] != self.neurons:
            self.neurons, self._steps = counts.shape[1], {}
        order = np.argsort(steps, kind="stable")
        uniq, start, number = np.unique(steps[order], return_index=True, return_counts=True)
        sums = np.add.reduceat(counts[order], start, axis=0) if len(order) else counts[:0]
        for s, total, k in zip(uniq.tolist(), sums, number.tolist(), strict=True):
            old = self._steps.get(s)
            self._steps[s] = (total, k * points) if old is None else (old[0] + total, old[1] + k * points)
        if len(self._steps) > self.window:
            for s in sorted(self._steps)[:len(self._steps) - self.window]:
                del self._steps[s]

    def totals(self) -> tuple[np.ndarray, int]:
        """Each neuron's spikes, and the time points each neuron had, over the window."""
        counts = np.zeros(self.neurons, np.int64)
        points = 0
        for c, p in self._steps.values():
            counts += c
            points += p
        return counts, points
