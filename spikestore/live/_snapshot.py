"""What one refresh of a :class:`~spikestore.live.Follower` shows: a :class:`Snapshot` of every stream.

Both classes are frozen: a snapshot handed to a view (the terminal, the web
page) never changes under it while the follower goes on reading. Their arrays
are the snapshot's own, read-only copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Snapshot", "StreamSummary"]


@dataclass(frozen=True)
class StreamSummary:
    """What a follower knows of one stream (or of one rank's part of it, in :attr:`per_rank`).

    Attributes
    ----------
    key
        The stream key, ``"quantity/layer"``.
    binary
        Whether every segment is ``bits`` encoded (spikes): :attr:`rate`,
        :attr:`neuron_rates` and the fractions are set, :attr:`mean` and
        :attr:`std` are not; the other way round for every other stream.
    records
        Committed records.
    last_step
        Step of the last committed record (``None`` while there is none).
    ranks
        The ranks that recorded the stream.
    steps
        ``int64``, ascending: the first step of each point of the history
        (at most the follower's ``history`` points; see :mod:`spikestore.live`).
    rate
        Binary streams: spikes / values of the records of each point.
    mean, std
        Other streams: mean and standard deviation (``ddof=0``) of every value of the records of each point.
    neurons
        Values per record along the last axis (1 for scalar records).
    neuron_rates
        Binary streams: each neuron's firing rate over the last ``window`` steps seen.
    dead_fraction, saturated_fraction
        Binary streams: the fraction of neurons that never fired, and that fired at every time point, in the
        last ``window`` steps (``None`` before the first record).
    bytes_on_disk
        :meth:`Stream.nbytes() <spikestore.Stream.nbytes>`: records, index arrays and documents.
    bits_per_spike
        Binary streams: bits of the segments' stored chunks per spike recorded (``None`` without spikes).
    bits_over_bounds
        Binary streams: the same bits over each Shannon bound of the spikes read, ``{"iid", "neuron",
        "conditional"}`` (one rate; a rate per neuron; a rate per neuron given its previous time step:
        :class:`spikestore.codecs._bounds.SpikeCounts`); ``None`` without spikes.
    records_per_second
        Committed records per second between the last two refreshes that saw the stream grow.
    per_rank
        The same summary for each rank's part, for runs of several ranks (empty for one rank).
    latest
        The last committed record (in the stream's record order), as the reader returns it.
    window_steps
        How many distinct steps the per-neuron window holds now (at most the follower's ``window``).
    """

    key: str
    binary: bool
    records: int
    last_step: int | None
    ranks: tuple[int, ...]
    steps: np.ndarray
    rate: np.ndarray | None
    mean: np.ndarray | None
    std: np.ndarray | None
    neurons: int
    neuron_rates: np.ndarray | None
    dead_fraction: float | None
    saturated_fraction: float | None
    bytes_on_disk: int
    bits_per_spike: float | None
    records_per_second: float | None
    per_rank: dict[int, StreamSummary] = field(default_factory=dict)
    latest: np.ndarray | None = None
    window_steps: int = 0
    bits_over_bounds: dict[str, float] | None = None


@dataclass(frozen=True)
class Snapshot:
    """One refresh of a follower: the run's writer status and a summary of every stream.

    Attributes
    ----------
    path
        The store's path or URL.
    time
        ``time.time()`` of the refresh.
    writer
        :attr:`Run.writer <spikestore.Run.writer>` (rank 0's, for a run of several ranks).
    failed
        Streams that failed (stream key to reason), from the writer status of every part.
    streams
        Every stream, in the run's order.
    refresh_seconds
        How long the refresh took.
    new_records
        Records this refresh decoded (0 when nothing was committed since the last one).
    writers
        Each rank's writer status (one entry, rank 0, for a one-process store).
    dropped
        Records the writers dropped (``on_full="drop"``), over every rank.
    """

    path: str
    time: float
    writer: dict[str, Any]
    failed: dict[str, str]
    streams: dict[str, StreamSummary]
    refresh_seconds: float
    new_records: int
    writers: dict[int, dict[str, Any]] = field(default_factory=dict)
    dropped: int = 0
