"""Which steps, samples and neurons a monitor records: :class:`Selection`.

Selecting is done in the hook, on the tensor's own device, before anything is
copied or handed to the writer, so recording a few neurons of a large layer
costs what those neurons cost. The same selection is written into each
stream's document (:meth:`Selection.layout`, a
:class:`~spikestore._format.layout.RecordLayout`, the one description of a
record's axes that readers use too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from spikestore._format.layout import IndexDoc, RecordLayout
from spikestore.errors import InvalidArgumentError
from spikestore.monitor._records import rebuilt_like

__all__ = ["Index", "Selection", "index_doc"]

#: A ``batch``/``neurons`` selection as the user gives it.
Index = int | slice | Sequence[int] | np.ndarray | torch.Tensor | None


def index_doc(ix: Index) -> IndexDoc:
    """A ``batch``/``neurons`` selection as a stream document stores it.

    Returns
    -------
    None, list of int or dict
        ``None`` (all), ``[i, ...]`` or ``{"slice": [start, stop, step]}``.

    Raises
    ------
    InvalidArgumentError
        If ``ix`` is not an int, slice or 1-D int sequence.
    """
    if ix is None:
        return None
    if isinstance(ix, slice):
        return {"slice": [ix.start, ix.stop, ix.step]}
    if isinstance(ix, (int, np.integer)) and not isinstance(ix, bool):
        return [int(ix)]
    arr = ix.detach().cpu().numpy() if isinstance(ix, torch.Tensor) else np.asarray(ix)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise InvalidArgumentError(
            f"a batch/neurons selection must be an int, slice or 1-D int sequence, not {ix!r}")
    return [int(v) for v in arr]


class Selection:
    """Which steps, samples and neurons a monitor records.

    Parameters
    ----------
    every, start, stop
        Record only steps ``start <= step < stop`` with
        ``(step - start) % every == 0``.
    batch, neurons
        Samples (on the batch axis) and neurons (on the flattened axes after
        it) to keep; ``None`` keeps all.

    Raises
    ------
    InvalidArgumentError
        If a parameter is out of range or of the wrong type.
    """

    def __init__(self, every: int, start: int | None, stop: int | None, batch: Index,
                 neurons: Index) -> None:
        if not isinstance(every, int) or every < 1:
            raise InvalidArgumentError(f"every must be an int >= 1, not {every!r}")
        for name, v in (("start", start), ("stop", stop)):
            if v is not None and (not isinstance(v, int) or v < 0):
                raise InvalidArgumentError(f"{name} must be None or an int >= 0, not {v!r}")
        self.every, self.start, self.stop = every, start, stop
        self.batch_doc, self.neurons_doc = index_doc(batch), index_doc(neurons)
        self.batch = batch if isinstance(batch, slice) or batch is None else self.batch_doc
        self.neurons = neurons if isinstance(neurons, slice) or neurons is None else self.neurons_doc
        self._cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    def wants(self, step: int) -> bool:
        """Whether records of ``step`` are kept."""
        if self.start is not None and step < self.start:
            return False
        if self.stop is not None and step >= self.stop:
            return False
        base = self.start or 0
        return (step - base) % self.every == 0

    def _ix(self, which: str, ix: Any, device: torch.device) -> Any:
        # Index tensors are made once per device, not on every hook call.
        if isinstance(ix, slice):
            return ix
        t = self._cache.get((which, device))
        if t is None:
            t = self._cache[(which, device)] = torch.as_tensor(ix, dtype=torch.long, device=device)
        return t

    def apply(self, x: Any, batch_axis: int) -> Any:
        """Select samples and neurons of every tensor in ``x`` (on its device).

        Parameters
        ----------
        x
            A tensor, a tuple/list (or named tuple) of them, or any other value
            (returned as is).
        batch_axis
            The batch axis of a record: 1 in multi-step mode ``[T, N, ...]``,
            0 in single-step mode ``[N, ...]``.

        Returns
        -------
        Any
            ``x`` with each tensor indexed to ``[..., N', K]`` (``K`` the
            selected neurons of the flattened trailing axes), or ``[..., N', ...]``
            when only ``batch`` is given.

        Raises
        ------
        IndexError, RuntimeError
            From torch, when the indices do not fit the tensor.
        """
        if self.batch is None and self.neurons is None:
            return x
        if isinstance(x, (tuple, list)):
            return rebuilt_like(x, (self.apply(v, batch_axis) for v in x))
        if not isinstance(x, torch.Tensor) or x.dim() <= batch_axis:
            return x
        if self.batch is not None:
            ix = self._ix("batch", self.batch, x.device)
            x = x[(slice(None),) * batch_axis + (ix,)]
        if self.neurons is not None:
            x = x.flatten(batch_axis + 1) if x.dim() > batch_axis + 1 else x.unsqueeze(-1)
            x = x[..., self._ix("neurons", self.neurons, x.device)]
        return x

    def layout(self, step_mode: str) -> RecordLayout:
        """The layout of a layer's records in ``step_mode`` under this selection."""
        return RecordLayout(step_mode, self.every, self.start, self.stop, self.batch_doc, self.neurons_doc)
