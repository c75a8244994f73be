"""What the axes of a stream's records mean: :class:`RecordLayout`.

A monitor knows whether its layer ran in SpikingJelly's multi-step mode
(records ``[T, N, ...]``) or single-step mode (``[N, ...]``), and which
samples and neurons it kept. It writes that into the stream document's
``selection`` field; every reader of records (the stream views, xarray,
analysis, plots, exporters) asks this one class what the axes are instead of
decoding the document itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IndexDoc", "RecordLayout"]

#: A batch/neuron selection as stored: ``None`` (all), a list of indices, or
#: ``{"slice": [start, stop, step]}``.
IndexDoc = list[int] | dict[str, list[int | None]] | None

#: Leading axes of a record in each step mode, and the batch axis they imply.
_LEADS: dict[str, tuple[str, ...]] = {"m": ("time", "batch"), "s": ("batch",)}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_or_none(x: Any) -> int | None:
    return x if _is_int(x) else None


def _index_doc(x: Any) -> IndexDoc:
    """A stored batch/neuron selection, or ``None`` (all) when it is not one."""
    if isinstance(x, list) and all(_is_int(v) for v in x):
        return x
    if isinstance(x, dict) and isinstance(x.get("slice"), list) and len(x["slice"]) == 3 and all(
            v is None or _is_int(v) for v in x["slice"]):
        return x
    return None


@dataclass(frozen=True)
class RecordLayout:
    """The layout of one stream's records, as its monitor recorded it.

    Attributes
    ----------
    step_mode
        ``"m"`` (records ``[T, N, neurons...]``), ``"s"`` (``[N, neurons...]``)
        or ``None`` when unknown (records appended by hand, or reduced by a
        ``function_on_*``).
    every, start, stop
        Which steps the monitor recorded.
    batch, neurons
        Which samples and (flattened) neurons it kept (:data:`IndexDoc`).
    """

    step_mode: str | None = None
    every: int = 1
    start: int | None = None
    stop: int | None = None
    batch: IndexDoc = None
    neurons: IndexDoc = None

    @property
    def batch_axis(self) -> int | None:
        """Position of the batch axis in a record (``None`` when unknown)."""
        lead = _LEADS.get(self.step_mode or "")
        return None if lead is None else len(lead) - 1

    @classmethod
    def from_selection(cls, doc: dict[str, Any] | None) -> RecordLayout:
        """The layout a stream document's ``selection`` describes (``None``: nothing known).

        A document whose ``batch_axis`` disagrees with its ``step_mode`` is
        treated as an unknown layout rather than guessed at.
        """
        if not isinstance(doc, dict):
            return cls()
        mode = doc.get("step_mode")
        if mode not in _LEADS or doc.get("batch_axis") != len(_LEADS[mode]) - 1:
            mode = None
        # The selection is informative (format.md §3): a field of the wrong kind means "unknown".
        every = doc.get("every")
        every = every if isinstance(every, int) and not isinstance(every, bool) and every >= 1 else 1
        return cls(mode, every, _int_or_none(doc.get("start")),
                   _int_or_none(doc.get("stop")), _index_doc(doc.get("batch")),
                   _index_doc(doc.get("neurons")))

    def to_selection(self) -> dict[str, Any]:
        """The stream document's ``selection`` field for this layout."""
        return {"every": self.every, "start": self.start, "stop": self.stop, "batch": self.batch,
                "neurons": self.neurons, "step_mode": self.step_mode, "batch_axis": self.batch_axis}

    def lead(self, shape: tuple[int, ...]) -> tuple[str, ...] | None:
        """Names of the leading (time/batch) axes, or ``None`` when records of ``shape`` do not fit."""
        lead = _LEADS.get(self.step_mode or "")
        return lead if lead is not None and len(shape) >= len(lead) else None

    def dims(self, shape: tuple[int, ...]) -> tuple[str, ...]:
        """Names of the axes of a record of ``shape``.

        ``("time", "batch", "neuron")`` in multi-step mode, ``("batch",
        "neuron")`` in single-step mode; several neuron axes are
        ``neuron_0, neuron_1, ...``. Records whose layout is unknown get
        xarray's neutral ``dim_0, dim_1, ...``.
        """
        lead = self.lead(shape)
        if lead is None:
            return tuple(f"dim_{k}" for k in range(len(shape)))
        rest = len(shape) - len(lead)
        return lead + (("neuron",) if rest == 1 else tuple(f"neuron_{k}" for k in range(rest)))

    def kind(self, shape: tuple[int, ...]) -> str:
        """How exporters read a record: ``"m"`` ``[T, N, neurons...]``, ``"s"`` ``[N, neurons...]``
        or ``"n"`` ``[neurons...]`` (no batch axis).

        Unknown layouts are guessed from the number of axes (3 or more:
        multi-step, 2: single-step), which is how SpikingJelly layers' records look.
        """
        lead = self.lead(shape)
        if lead is not None:
            return self.step_mode  # type: ignore[return-value]
        if len(shape) >= 3:
            return "m"
        return "s" if len(shape) == 2 else "n"

    def original_indices(self, shape: tuple[int, ...],
                         dims: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The layer's own batch and neuron indices of a record's axes, where the monitor kept a subset.

        Keys are ``"batch"`` and ``"neuron"`` (only for axes that exist and
        whose selection is known in full: a slice with an open end says
        nothing about the layer's size, so it gives no labels). ``dims``
        names the axes when a user renamed them (default :meth:`dims`).
        """
        dims = self.dims(shape) if dims is None else dims
        out: dict[str, np.ndarray] = {}
        for dim, ix in (("batch", self.batch), ("neuron", self.neurons)):
            if dim not in dims or ix is None:
                continue
            if isinstance(ix, dict):
                start, stop, step = ix["slice"]
                if stop is None or (start or 0) < 0 or stop < 0:
                    continue
                ix = list(range(start or 0, stop, step or 1))
            if len(ix) == shape[dims.index(dim)]:
                out[dim] = np.asarray(ix, dtype=np.int64)
        return out
