"""``spikestore.FlightRecorder``: what a flight-recorded store keeps (docs/flight-recorder.md).

A store opened with ``flight_recorder=`` writes no record as it arrives.
The writer thread holds the last ``before`` steps of every stream in a ring
(:mod:`spikestore._write.flight_ring`), checks each record against the
triggers (:mod:`spikestore._write.flight_checks`), and writes the records of
steps ``s - before`` through ``s + after`` around each trigger at step ``s``
(:mod:`spikestore._write.flight_state`). This module holds only the
recorder's settings and their checks; one recorder may serve several stores.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from spikestore.errors import InvalidArgumentError

__all__ = ["BUILTIN_TRIGGERS", "DEFAULT_MAX_BYTES", "MAX_REASON_CHARS", "FlightRecorder", "TriggerFunction",
           "trigger_name"]

#: The triggers named by a string (docs/flight-recorder.md §3).
BUILTIN_TRIGGERS = ("nonfinite", "silent", "saturated")
#: Default byte budget of the ring: enough for 50 steps of the reference workload's
#: spikes (~0.6 MB a step packed) many times over, small beside a training process.
DEFAULT_MAX_BYTES = 256 << 20
#: Longest reason a trigger may give (it is stored in the root document).
MAX_REASON_CHARS = 1000

#: A trigger of the user's: given a stream key and the record's values, a reason or ``None``.
TriggerFunction = Callable[[str, np.ndarray], "str | None"]


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"FlightRecorder: {name} must be an int, not bool")
    try:
        n = operator.index(value)
    except TypeError:
        raise InvalidArgumentError(
            f"FlightRecorder: {name} must be an int, not {type(value).__name__} ({value!r})") from None
    if n < 0:
        raise InvalidArgumentError(f"FlightRecorder: {name} must be 0 or more, not {n}")
    return n


class FlightRecorder:
    """Keep only the steps around what went wrong.

    Give it to :class:`~spikestore.Store` (``flight_recorder=``): the store
    then writes the records of steps ``s - before`` through ``s + after``
    (inclusive) around each trigger at step ``s``, every stream's, and no
    other record. Overlapping windows merge. ``store.trigger(reason)`` marks
    the current step from user code; :attr:`spikestore.Run.triggers` lists
    the triggers of a recorded run. See docs/flight-recorder.md.

    Parameters
    ----------
    before
        Steps kept before a trigger's step (its own step is always kept).
    after
        Steps kept after it; a run that ends earlier ends the window.
    triggers
        What fires a trigger, each one of:

        * ``"nonfinite"``: a float record (any float or complex dtype)
          holds NaN or ±Inf; the trigger names its stream and step. On
          CUDA the check runs on the device and its answer arrives with
          the record's copy (docs/cuda.md).
        * ``"silent"``: a record stored as bits (every value 0 or 1: a
          layer's spikes over one step) fires at a rate of at most
          ``silent_rate`` (default 0: no spike at all).
        * ``"saturated"``: such a record fires at a rate of at least
          ``saturated_rate`` (default 1: every neuron at every time step).
        * a callable ``f(key, record)`` given the stream key and the
          record's values (numpy, its logical dtype; bfloat16 as float32),
          returning a reason (a non-empty ``str``) or ``None``. It runs on
          the writer thread; an exception it raises stops that stream
          (:class:`~spikestore.errors.StreamFailedError`).
    max_bytes
        Budget of the ring, in bytes of records as the writer holds them
        (spikes packed 8 to a byte, other records zstd-compressed).
        When a new step would exceed it, the oldest steps leave first: the
        window before a trigger shrinks, which is counted
        (``shrunk_steps`` of :attr:`spikestore.Run.flight_recorder`) and
        warned about at ``close``. The newest step is never dropped, so a
        trigger's own step is always kept (a single step larger than the
        budget is held alone).
    silent_rate, saturated_rate
        Thresholds of ``"silent"`` and ``"saturated"``, firing rates in
        ``[0, 1]`` with ``silent_rate < saturated_rate``.
    """

    def __init__(self, before: int = 50, after: int = 10,
                 triggers: Iterable[str | TriggerFunction] = ("nonfinite",), *,
                 max_bytes: int = DEFAULT_MAX_BYTES, silent_rate: float = 0.0,
                 saturated_rate: float = 1.0) -> None:
        self.before = _count("before", before)
        self.after = _count("after", after)
        self.max_bytes = _count("max_bytes", max_bytes)
        if self.max_bytes == 0:
            raise InvalidArgumentError("FlightRecorder: max_bytes must be positive")
        if isinstance(triggers, (str, bytes)) or callable(triggers):
            triggers = (triggers,)  # (one trigger given bare)
        checked: list[str | TriggerFunction] = []
        for t in triggers:
            if (t in BUILTIN_TRIGGERS) if isinstance(t, str) else callable(t):
                checked.append(t)
            else:
                raise InvalidArgumentError(
                    f"FlightRecorder: unknown trigger {t!r}; give {', '.join(map(repr, BUILTIN_TRIGGERS))} "
                    "or a callable f(key, record) returning a reason or None")
        self.triggers: tuple[str | TriggerFunction, ...] = tuple(checked)
        rates = []
        for name, rate in (("silent_rate", silent_rate), ("saturated_rate", saturated_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                raise InvalidArgumentError(f"FlightRecorder: {name} must be a number in [0, 1], not {rate!r}")
            rates.append(float(rate))
        if rates[0] >= rates[1]:
            raise InvalidArgumentError(
                f"FlightRecorder: silent_rate ({rates[0]}) must be below saturated_rate ({rates[1]})")
        self.silent_rate, self.saturated_rate = rates

    @property
    def checks_nonfinite(self) -> bool:
        """Whether ``"nonfinite"`` is armed (CUDA records then carry a device-side finite flag)."""
        return "nonfinite" in self.triggers

    def settings(self) -> dict[str, Any]:
        """The settings as the store's root document holds them (docs/format.md §2.3)."""
        return {"before": self.before, "after": self.after, "max_bytes": self.max_bytes,
                "checks": [t if isinstance(t, str) else trigger_name(t) for t in self.triggers],
                "silent_rate": self.silent_rate, "saturated_rate": self.saturated_rate}

    def __repr__(self) -> str:
        names = ", ".join(repr(t) if isinstance(t, str) else trigger_name(t) for t in self.triggers)
        return (f"spikestore.FlightRecorder(before={self.before}, after={self.after}, triggers=({names},), "
                f"max_bytes={self.max_bytes})")


def trigger_name(f: Callable[..., Any]) -> str:
    """A callable's name for documents and messages."""
    return str(getattr(f, "__qualname__", None) or type(f).__qualname__)
