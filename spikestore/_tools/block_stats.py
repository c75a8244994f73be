"""What one analysis task computes from one block of stored records.

Each ``block_*`` function is one task of a :mod:`spikestore.analysis` pass:
it takes one :class:`~spikestore._read.segment.Block` (the records of one
stored chunk, or a part of one) and returns a small result the caller
combines. They are module-level functions so that a ``dask.distributed``
worker can run them by name (:func:`spikestore._integrations.distributed.map_blocks`),
and they read only their block, so the same code gives the same answer in
the caller's process and on a worker.

Spikes are the non-zero values; bit-packed segments are counted straight
from their packed bytes (a popcount), without unpacking to float32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spikestore._format.dtypes import BIT_ORDER
from spikestore._read.segment import Block, Segment

__all__ = ["SAMPLE_DIMS", "Intervals", "add_hist", "block_counts", "block_isi", "block_neuron_counts",
           "block_norms", "block_population", "neuron_axes", "record_counts", "spike_mask"]

#: Record axes that hold samples rather than neurons: averaged over by per-neuron results.
SAMPLE_DIMS = ("time", "batch")


def spike_mask(seg: Segment, rows: np.ndarray) -> np.ndarray:
    """Stored rows as a bool array ``[k, *shape]`` (True where a spike is)."""
    if seg.encoding == "bits":
        return np.unpackbits(rows, axis=-1, count=seg.shape[-1], bitorder=BIT_ORDER).view(np.bool_)
    return np.asarray(seg.decode_rows(rows) != 0)


def record_counts(seg: Segment, rows: np.ndarray) -> np.ndarray:
    """Spikes in each record (int64 ``[k]``)."""
    k = len(rows)
    if seg.encoding == "bits":  # padding bits are 0, so a popcount of the packed bytes is exact
        return np.asarray(np.bitwise_count(rows.reshape(k, -1)).sum(axis=1, dtype=np.int64))
    return np.asarray(np.count_nonzero(seg.decode_rows(rows).reshape(k, -1), axis=1), np.int64)


def neuron_axes(seg: Segment) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Record axes averaged over (time, batch) and kept (neurons), as positions in ``[k, *shape]``."""
    dims = seg.dims
    sample = tuple(1 + i for i, d in enumerate(dims) if d in SAMPLE_DIMS)
    kept = tuple(1 + i for i, d in enumerate(dims) if d not in SAMPLE_DIMS)
    return sample, kept


def block_counts(block: Block) -> np.ndarray:
    """One task: spikes in each record of ``block``."""
    return record_counts(block.segment, block.rows())


def block_neuron_counts(block: Block, sample: tuple[int, ...]) -> np.ndarray:
    """One task: spikes of ``block`` summed over its records and the ``sample`` axes."""
    return np.asarray(spike_mask(block.segment, block.rows()).sum(axis=(0, *sample), dtype=np.int64))


def block_population(block: Block, t: int) -> np.ndarray:
    """One task: the fraction of values spiking at each time step (axis ``t``) of each record of ``block``."""
    seg, rows = block.segment, block.rows()
    packed = seg.encoding == "bits" and t != len(seg.shape)  # popcount, neurons stay packed
    counts = np.bitwise_count(rows) if packed else spike_mask(seg, rows)
    other = tuple(i for i in range(1, counts.ndim) if i != t)
    return np.asarray(counts.sum(axis=other, dtype=np.int64) / (np.prod(seg.shape) / seg.shape[t - 1]))


def add_hist(hist: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``hist + counts`` for histograms of different lengths."""
    if len(counts) > len(hist):
        hist = np.pad(hist, (0, len(counts) - len(hist)))
    hist[:len(counts)] += counts
    return hist


class Intervals(NamedTuple):
    """One block's inter-spike intervals, and what a sequence crossing its ends needs.

    ``first``/``last``: the call of each neuron's first spike in the block's
    first step and of its last spike in the block's last step (-1: none);
    ``None`` for records with a time axis, whose sequences end with them.
    """

    hist: np.ndarray
    first_step: int = 0
    first: np.ndarray | None = None
    last_step: int = 0
    last: np.ndarray | None = None
    one_step: bool = False


def block_isi(block: Block, t: int | None, steps: np.ndarray | None = None,
              calls: np.ndarray | None = None) -> Intervals:
    """One task: the intervals inside ``block`` (time axis ``t``; or, without one, records of one step in
    ``calls`` order form the sequence), and its ends for the caller to join across blocks."""
    hits = spike_mask(block.segment, block.rows())
    if t is not None:  # one pass per time step: the last spike of every sequence so far
        steps_t = np.moveaxis(hits, t, 0).reshape(hits.shape[t], -1)
        hist, last = np.zeros(0, np.int64), np.full(steps_t.shape[1], -1, np.int64)
        for now, row in enumerate(steps_t):
            hist = add_hist(hist, np.bincount(now - last[row & (last >= 0)]))
            last[row] = now
        return Intervals(hist)
    assert steps is not None and calls is not None
    flat = hits.reshape(len(hits), -1)
    hist, lead = np.zeros(0, np.int64), True
    first, last = np.full(flat.shape[1], -1, np.int64), np.full(flat.shape[1], -1, np.int64)
    for k in range(len(flat)):  # one record is one time step
        if k and steps[k] != steps[k - 1]:
            last, lead = np.full(flat.shape[1], -1, np.int64), False
        now = int(calls[k])
        hist = add_hist(hist, np.bincount(now - last[flat[k] & (last >= 0)]))
        if lead:
            first[flat[k] & (first < 0)] = now
        last[flat[k]] = now
    return Intervals(hist, int(steps[0]), first, int(steps[-1]), last, lead)


def block_norms(block: Block) -> np.ndarray:
    """One task: the L2 norm of each record of ``block``."""
    seg, rows = block.segment, block.rows()
    if seg.encoding == "bits":
        return np.asarray(np.sqrt(record_counts(seg, rows)))  # values are 0/1
    x = seg.decode_rows(rows).astype(np.float64).reshape(len(block), -1)
    return np.asarray(np.sqrt(np.einsum("ij,ij->i", x, x)))
