"""Entropy bounds of recorded spikes: what the spike codec is measured against.

Three models of a layer's spikes, each a lower bound on the bits any coder
that uses only that model can spend (Shannon):

``iid``
    Every value is an independent coin with the layer's overall firing rate.
``neuron``
    Each neuron has its own rate: ``sum_j n_j H(p_j)``.
``conditional``
    Each neuron's probability depends on whether it fired at the previous
    time step (a LIF neuron that fired has been reset): ``sum_j sum_c
    n_jc H(p_jc)``, with the first time step of a sequence counted as
    following silence.

:class:`SpikeCounts` holds the counts these need (per neuron: values,
spikes, values after a spike, spikes after a spike) and adds up records one
by one, so a store is measured without holding it in memory. A record's
axes are named by the stream's ``dims``: ``"time"`` is the time axis of a
multi-step record (absent: consecutive records are consecutive time steps),
``"batch"`` the samples, and every other axis indexes neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SpikeCounts", "entropy_bits"]


def entropy_bits(values: np.ndarray, ones: np.ndarray) -> float:
    """``sum(values * H(ones / values))`` in bits (terms with no values count 0)."""
    n = np.asarray(values, dtype=np.float64)
    c = np.asarray(ones, dtype=np.float64)
    ok = (c > 0) & (c < n)
    n, c = n[ok], c[ok]
    z = n - c
    return float(np.sum(n * np.log2(n) - c * np.log2(c) - z * np.log2(z)))


@dataclass
class SpikeCounts:
    """Per-neuron counts of a stream's spikes, added up record by record.

    Parameters
    ----------
    dims
        Names of a record's axes (``Stream.dims``).
    """

    dims: tuple[str, ...]
    values: np.ndarray | None = None  # per neuron: values seen
    ones: np.ndarray | None = None  # ... spikes
    after: np.ndarray | None = None  # ... values whose previous time step was a spike
    both: np.ndarray | None = None  # ... spikes whose previous time step was a spike
    _last: np.ndarray | None = field(default=None, repr=False)  # single-step: the previous record, (batch, neurons)

    def reset_sequence(self) -> None:
        """Start a new sequence: the next record of step-by-step records follows silence."""
        self._last = None

    def add(self, record: np.ndarray) -> None:
        """Count one record (0/1 values of any dtype, or bool)."""
        self.add_records(np.asarray(record)[None])

    def add_packed(self, rows: np.ndarray, width: int) -> None:
        """Count records stored as bits: ``uint8`` rows ``[k, *stored_shape]`` packed along the last axis,
        which holds ``width`` values (docs/format.md §4)."""
        self.add_records(np.unpackbits(rows, axis=-1, count=width, bitorder="little").view(np.bool_))

    def add_records(self, records: np.ndarray) -> None:
        """Count records ``[k, *shape]`` that follow the records counted so far."""
        x = np.asarray(records)
        x = x if x.dtype == np.bool_ else x != 0
        dims = tuple(self.dims) if len(self.dims) == x.ndim - 1 else ()
        t_axis = 1 + dims.index("time") if "time" in dims else None
        b_axis = 1 + dims.index("batch") if "batch" in dims else None
        lead = [a for a in (t_axis, b_axis) if a is not None]
        x = np.moveaxis(x, lead, list(range(1, len(lead) + 1)))
        if t_axis is None:  # records are consecutive time steps: (1, time, ...)
            x = x[None]
        if b_axis is None:
            x = x[:, :, None]
        seq = x.reshape(x.shape[0], x.shape[1], x.shape[2], -1)  # (sequences, time, batch, neurons)
        if self.values is None or self.values.size != seq.shape[3]:
            zeros = np.zeros(seq.shape[3], dtype=np.int64)
            self.values, self.ones, self.after, self.both = zeros, zeros.copy(), zeros.copy(), zeros.copy()
            self._last = None
        assert self.ones is not None and self.after is not None and self.both is not None
        prev = np.zeros_like(seq)
        prev[:, 1:] = seq[:, :-1]
        if t_axis is None and self._last is not None and self._last.shape == seq.shape[2:]:
            prev[0, 0] = self._last  # the previous record is the previous time step
        self._last = seq[0, -1].copy() if t_axis is None else None
        self.values += seq.shape[0] * seq.shape[1] * seq.shape[2]
        self.ones += seq.sum(axis=(0, 1, 2))
        self.after += prev.sum(axis=(0, 1, 2))
        self.both += (seq & prev).sum(axis=(0, 1, 2))

    @property
    def total(self) -> int:
        """Values counted."""
        return 0 if self.values is None else int(self.values.sum())

    @property
    def spikes(self) -> int:
        """Spikes counted."""
        return 0 if self.ones is None else int(self.ones.sum())

    def bounds(self) -> dict[str, float]:
        """The three bounds in bits: ``{"iid", "neuron", "conditional"}``."""
        if self.values is None or self.ones is None or self.after is None or self.both is None:
            return {"iid": 0.0, "neuron": 0.0, "conditional": 0.0}
        n, c = self.total, self.spikes
        iid = entropy_bits(np.array([n]), np.array([c]))
        neuron = entropy_bits(self.values, self.ones)
        quiet = self.values - self.after  # values after silence, and their spikes:
        cond = entropy_bits(quiet, self.ones - self.both) + entropy_bits(self.after, self.both)
        return {"iid": iid, "neuron": neuron, "conditional": cond}

