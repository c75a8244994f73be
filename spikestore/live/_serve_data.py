"""What the page of ``spikestore serve`` shows, computed from the live engine's summaries.

:class:`PageState` owns the store's reader and its :class:`~spikestore.live.Follower`.
One thread calls :meth:`PageState.refresh`; each call publishes a new immutable
:class:`PageData`, which the pages of every browser read without locks. Besides
the engine's bounded summaries it keeps, per stream, the records of the latest
step (for the raster and the voltage traces) and a bounded per-neuron rate
history (for the heat map). Both are capped in size, so the server's memory
does not grow with the run (docs/live.md).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from spikestore._read.padded import segment_batch_sizes
from spikestore._read.run import open as open_run
from spikestore._read.stream import Stream
from spikestore.backends import StoreURL
from spikestore.live._follower import Follower
from spikestore.live._snapshot import StreamSummary
from spikestore.plot._picks import short_batch_steps

__all__ = ["HEAT_COLUMNS", "HEAT_NEURONS", "LatestStep", "NeuronHeat", "PageData", "PageState"]

#: Most columns (steps) the per-neuron heat map keeps; neighbours merge beyond it.
HEAT_COLUMNS = 240
#: Most rows (neurons) of the heat map; neighbouring neurons are averaged beyond it.
HEAT_NEURONS = 256
#: Steps of a finished or long run read at start to fill the heat map's past.
HEAT_BACKFILL = 48
#: Caps on the latest step kept for the raster and traces: time steps (the last ones), samples, neurons.
MAX_TIME, MAX_BATCH, MAX_NEURONS = 512, 64, 2048


@dataclass(frozen=True)
class LatestStep:
    """The records of one stream's latest committed step, as ``values[time, sample, neuron]``.

    ``time_label`` says what the time axis is: a record's own time axis
    (multi-step monitors) or the records of the step in call order
    (single-step monitors, one record per time step).
    """

    step: int
    records: int
    values: np.ndarray
    time_label: str


@dataclass(frozen=True)
class NeuronHeat:
    """Per-neuron firing rate at a bounded number of steps: ``rates[row, column]`` at ``steps[column]``.

    ``group`` neighbouring neurons share a row when the layer has more than
    :data:`HEAT_NEURONS`.
    """

    steps: np.ndarray
    rates: np.ndarray
    group: int


@dataclass(frozen=True)
class PageData:
    """One refresh of everything the page shows; never changed once published."""

    version: int
    path: str
    time: float
    writer: dict[str, Any]
    failed: dict[str, str]
    streams: dict[str, StreamSummary]
    latest: dict[str, LatestStep]
    heat: dict[str, NeuronHeat]
    short_steps: np.ndarray


def _step_values(stream: Stream, step: int, latest: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The records of ``step`` as ``[time, sample, neuron]`` float32, within the size caps."""
    dims = stream.segment_of(len(stream) - 1).dims
    if "time" in dims and latest is not None:
        x, label = np.asarray(latest), "time step"
    else:
        x, label = np.asarray(stream.sel(step=[step])), "call (time step within the step)"
        if "time" in dims:  # records of a multi-step monitor: the last one of the step
            x, label = x[-1], "time step"
        else:
            dims = ("time", *dims)
    names = list(dims)
    x = np.moveaxis(x, names.index("time"), 0)
    names.insert(0, names.pop(names.index("time")))
    x = np.moveaxis(x, names.index("batch"), 1) if "batch" in names else x[:, None]
    x = x.reshape(x.shape[0], x.shape[1], -1)
    return np.ascontiguousarray(x[-MAX_TIME:, :MAX_BATCH, :MAX_NEURONS], dtype=np.float32), label


def _pool(rates: np.ndarray, group: int) -> np.ndarray:
    """Average ``group`` neighbouring neurons (the last group may be short)."""
    if group == 1:
        return rates
    pad = (-len(rates)) % group
    padded = np.concatenate([rates, np.full(pad, np.nan)]) if pad else rates
    pooled: np.ndarray = np.nanmean(padded.reshape(-1, group), axis=1)
    return pooled


class _HeatRing:
    """Columns of per-neuron rates at increasing steps; past :data:`HEAT_COLUMNS` neighbours merge in pairs."""

    def __init__(self, neurons: int) -> None:
        self.group = max(1, -(-neurons // HEAT_NEURONS))
        self.steps: list[int] = []
        self.columns: list[np.ndarray] = []

    def add(self, step: int, per_neuron: np.ndarray) -> None:
        column = _pool(per_neuron.astype(np.float64), self.group)
        if self.steps and step <= self.steps[-1]:
            if step == self.steps[-1]:
                self.columns[-1] = column
            return
        if self.columns and len(column) != len(self.columns[-1]):  # the layer changed size: start over
            self.steps, self.columns = [], []
        self.steps.append(step)
        self.columns.append(column)
        if len(self.steps) > HEAT_COLUMNS:  # merge the oldest pairs; an odd newest column stays as it is
            even = len(self.steps) - len(self.steps) % 2
            self.steps = self.steps[1:even:2] + self.steps[even:]
            pairs = zip(self.columns[0:even:2], self.columns[1:even:2], strict=True)
            self.columns = [(a + b) / 2 for a, b in pairs] + self.columns[even:]

    def view(self) -> NeuronHeat:
        rates = np.stack(self.columns, axis=1) if self.columns else np.zeros((0, 0))
        return NeuronHeat(np.asarray(self.steps, dtype=np.int64), rates, self.group)


def _per_neuron(values: np.ndarray) -> np.ndarray:
    """Firing rate of each neuron over the time steps and samples of ``values[time, sample, neuron]``."""
    rates: np.ndarray = values.reshape(-1, values.shape[-1]).mean(axis=0)
    return rates


class PageState:
    """The reader, the live engine and what the page shows, refreshed by one thread.

    Parameters
    ----------
    path
        The store's local path or URL.
    storage_options
        For a URL: what reaches it (as for ``spikestore.open``).
    window, history
        Passed to :class:`~spikestore.live.Follower`.
    """

    def __init__(self, path: str | os.PathLike[str] | StoreURL, storage_options: dict[str, Any] | None = None, *,
                 window: int = 100, history: int = 2000) -> None:
        self._run = open_run(path, storage_options=storage_options)
        self._follower = Follower(self._run, window=window, history=history)
        self._latest: dict[str, LatestStep] = {}
        self._heat: dict[str, _HeatRing] = {}
        self._versions = itertools.count(1)
        self.data: PageData | None = None
        self._seen: tuple[Any, ...] = ()
        self._short: tuple[tuple[Any, ...], np.ndarray] = ((), np.zeros(0, np.int64))

    def refresh(self) -> PageData:
        """Follow the store once and publish the new :class:`PageData` (also returned)."""
        snap = self._follower.refresh()
        for key, summary in snap.streams.items():
            if summary.records == 0 or summary.last_step is None:
                continue
            known = self._latest.get(key)
            if known is not None and known.records == summary.records:
                continue
            stream = self._run[key]
            values, label = _step_values(stream, summary.last_step, summary.latest)
            self._latest[key] = LatestStep(summary.last_step, summary.records, values, label)
            if summary.binary:
                ring = self._heat.get(key)
                if ring is None:
                    ring = self._heat[key] = _HeatRing(values.shape[-1])
                    self._backfill(ring, stream, summary.last_step)
                ring.add(summary.last_step, _per_neuron(values))
        seen = (tuple((key, s.records, s.last_step) for key, s in snap.streams.items()),
                repr(sorted(snap.writer.items())), tuple(sorted(snap.failed.items())))
        if self.data is not None and seen == self._seen:  # nothing new: the pages keep what they drew
            return self.data
        self._seen = seen
        self.data = PageData(next(self._versions), snap.path, snap.time, dict(snap.writer), dict(snap.failed),
                             dict(snap.streams), dict(self._latest),
                             {key: ring.view() for key, ring in self._heat.items()}, self._short_steps())
        return self.data

    def _short_steps(self) -> np.ndarray:
        """:func:`~spikestore.plot.short_batch_steps` of the run, read again only when it can have changed:
        a new segment, or more records in a last segment of a smaller batch."""
        marker = []
        for key in self._run.streams:
            stream = self._run[key]
            sizes = segment_batch_sizes(stream) or []
            short_last = bool(sizes) and sizes[-1] < max(sizes)
            marker.append((key, len(sizes), stream.segments[-1].stop if short_last else None))
        if tuple(marker) != self._short[0]:
            self._short = (tuple(marker), short_batch_steps(self._run))
        return self._short[1]

    def _backfill(self, ring: _HeatRing, stream: Stream, last_step: int) -> None:
        """Fill the heat map's past with a few steps spread over the run (a run followed from its middle)."""
        steps = np.unique(stream.steps)
        steps = steps[steps < last_step]
        if not len(steps):
            return
        picked = np.unique(steps[np.linspace(0, len(steps) - 1, min(HEAT_BACKFILL, len(steps))).astype(np.int64)])
        for step in picked:
            values, _ = _step_values(stream, int(step), None)
            ring.add(int(step), _per_neuron(values))

    def close(self) -> None:
        """Release the engine and the reader."""
        self._follower.close()
