"""What a flight-recorded store keeps: the writer thread's decisions (docs/flight-recorder.md).

The writer hands every record, once prepared, to :meth:`FlightState.record`,
and every ``store.trigger`` to :meth:`FlightState.mark`. Each returns the
records to write now, in the order they arrived: a record whose step lies
in a window already open is written at once; any other is held in the ring,
and a trigger at step ``s`` takes the ring's records of steps ``s - before``
through ``s + after`` out to be written. Windows are kept as merged step
intervals. :meth:`FlightState.document` is the ``flight_recorder`` object of
the root document (docs/format.md §2.3), written after the records it
describes are committed.
"""

from __future__ import annotations

import bisect
import warnings
from typing import Any

from spikestore._write.capture import Frame, Prepared
from spikestore._write.flight import FlightRecorder
from spikestore._write.flight_checks import fired
from spikestore._write.flight_ring import Entry, Ring, hold
from spikestore._write.queue import Meta

__all__ = ["MAX_LISTED", "FlightState", "warn_shrunk"]

#: Most triggers the root document lists; later ones are counted (``unlisted``), their windows kept.
MAX_LISTED = 10_000


class FlightState:
    """One store's flight recorder on the writer thread.

    Parameters
    ----------
    rec
        The recorder's settings.
    resumed
        The ``flight_recorder`` object of a store opened for append: its
        triggers and counts carry on.
    """

    def __init__(self, rec: FlightRecorder, resumed: dict[str, Any] | None = None) -> None:
        self.rec = rec
        self.ring = Ring(rec.before, rec.max_bytes)
        old = resumed or {}
        self.triggers: list[dict[str, Any]] = [dict(t) for t in old.get("triggers", [])]
        self._counts = {k: int(old.get(k, 0)) for k in ("repeats", "unlisted", "shrunk_steps")}
        self._peak = int(old.get("ring_peak_bytes", 0))
        self._lo: list[int] = []  # merged windows [lo, hi], sorted, disjoint
        self._hi: list[int] = []
        self._last_listed: dict[tuple[str, str | None], int] = {}  # (reason, stream) -> step last listed
        self._seq = 0
        self._forms: dict[str, tuple[str, tuple[int, ...], str, str | None]] = {}
        self._meta: dict[str, Meta] = {}

    # -- what the writer asks --------------------------------------------------------
    def keep_raw(self, frame: Frame) -> bool:
        """Whether ``frame`` is stored raw without a packing attempt: its stream's last record was raw
        and of its shape, dtype and precision (the rule a plain store's open segment gives)."""
        form = self._forms.get(frame.key)
        return form is not None and form == ("raw", frame.shape, frame.dtype, frame.extra.get("precision"))

    def record(self, frame: Frame, p: Prepared, device_nonfinite: bool | None = None) -> list[Entry]:
        """Check and place one prepared record; return the records to write now, in arrival order."""
        self._rewind(frame.step)
        self._forms[frame.key] = (p.encoding, p.shape, p.dtype, p.precision)
        reasons = fired(self.rec, frame.key, frame.step, p, device_nonfinite)
        self._seq += 1
        kept = self.kept(frame.step)
        e = hold(self._seq, frame.key, frame.step, frame.call, frame.time, p, ring=not kept,
                 owned=frame.packed and p.encoding == "bits")
        out: list[Entry] = []
        if kept:
            out.append(e)  # (written before the writer prepares another record: its buffers stay valid)
        else:
            self.ring.push(e)
        for reason in reasons:
            out.extend(self._fire(frame.step, reason, frame.key))
        return out

    def mark(self, step: int, reason: str) -> list[Entry]:
        """``store.trigger(reason)`` at ``step``: the records to write now."""
        self._rewind(step)
        return self._fire(step, reason, None)

    def kept(self, step: int) -> bool:
        """Whether ``step`` lies in a window of a trigger seen so far."""
        i = bisect.bisect_right(self._lo, step) - 1
        return i >= 0 and step <= self._hi[i]

    def defer_meta(self, item: Meta) -> None:
        """Keep a stream's selection/attrs until its first record is written (the latest one wins)."""
        self._meta[item.key] = item

    def pending_meta(self, key: str) -> Meta | None:
        """The deferred selection/attrs of ``key``, handed over once."""
        return self._meta.pop(key, None)

    def document(self) -> dict[str, Any]:
        """The root document's ``flight_recorder`` object (docs/format.md §2.3)."""
        self._peak = max(self._peak, self.ring.peak_bytes)
        return {**self.rec.settings(), "triggers": [dict(t) for t in self.triggers], **self._counts,
                "shrunk_steps": self._counts["shrunk_steps"] + self.ring.shrunk_steps,
                "ring_peak_bytes": self._peak}

    def close(self) -> None:
        """The store closes: whatever the ring holds is outside every window and is not written."""
        self.ring.clear()

    def _rewind(self, step: int) -> None:
        """A step more than ``before`` behind the newest starts the steps afresh (an epoch-local step
        counter): the ring's steps are not before it and the open windows are not around it."""
        if step < self.ring.newest - self.rec.before:
            self.ring.clear()
            self._lo.clear()
            self._hi.clear()
            self._last_listed.clear()

    # -- triggers ----------------------------------------------------------------------
    def _fire(self, step: int, reason: str, stream: str | None) -> list[Entry]:
        what = (reason, stream)
        last = self._last_listed.get(what)
        if last is not None and last <= step <= last + self.rec.after:
            self._counts["repeats"] += 1  # the same trigger again inside its own window: counted
        elif len(self.triggers) >= MAX_LISTED:
            self._counts["unlisted"] += 1
        else:
            self.triggers.append({"step": step, "reason": reason, "stream": stream})
            self._last_listed[what] = step
        lo, hi = max(0, step - self.rec.before), step + self.rec.after
        self._open(lo, hi)
        return self.ring.take(lo, hi)

    def _open(self, lo: int, hi: int) -> None:
        """Add window ``[lo, hi]``, merging it with those it overlaps or touches."""
        i = bisect.bisect_left(self._hi, lo - 1)  # first window that ends at or after lo - 1
        j = bisect.bisect_right(self._lo, hi + 1)  # windows before j start at or before hi + 1
        if i < j:
            lo, hi = min(lo, self._lo[i]), max(hi, self._hi[j - 1])
        self._lo[i:j] = [lo]
        self._hi[i:j] = [hi]


def warn_shrunk(state: FlightState, where: str) -> None:
    """Warn at close when the budget dropped steps that ``before`` would have kept since this store was opened."""
    shrunk = state.ring.shrunk_steps
    doc = state.document()
    if shrunk:
        warnings.warn(
            f"{where}: the flight recorder's ring ran over its budget of {doc['max_bytes']} bytes and dropped "
            f"{shrunk} steps early, so windows may start later than before={doc['before']} steps ahead of their "
            f"trigger (peak {doc['ring_peak_bytes']} bytes held); raise FlightRecorder(max_bytes=...) to keep them",
            RuntimeWarning, stacklevel=3)
