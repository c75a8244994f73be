"""What monitors use of a store beyond its public API: :class:`Recorder`.

A :class:`~spikestore.Store` offers its users ``append``, ``set_step``,
``set_stream_info``, ``flush`` and ``close``. Monitors need three more
things, which no user calls: to reserve the streams they record (so that
two monitors never interleave their records in one stream), to advance the
step at each forward pass until the user sets it, and a place to keep their
per-store stepping state. Each store owns one ``Recorder`` that gives them
exactly that; monitor code gets it with :func:`spikestore._write.store.recorder`.
"""

from __future__ import annotations

from spikestore._write.clock import StepClock
from spikestore._write.streams import StreamTable

__all__ = ["Recorder"]


class Recorder:
    """One store's interface for the monitors that record to it.

    Parameters
    ----------
    clock
        The store's step.
    streams
        The store's stream table (who records which stream).
    """

    def __init__(self, clock: StepClock, streams: StreamTable) -> None:
        self.clock = clock
        self._streams = streams
        #: The monitors' automatic stepping of this store
        #: (:class:`spikestore.monitor._autostep.AutoStep`), created by the first monitor.
        self.stepper: object | None = None

    def claim(self, key: str, owner: object, what: str) -> None:
        """Reserve stream ``key`` for ``owner`` (a monitor, named ``what`` in messages), or raise
        :class:`~spikestore.errors.InvalidArgumentError` if another live monitor holds it."""
        self._streams.claim(key, owner, what)

    def release(self, key: str, owner: object) -> None:
        """Free stream ``key`` if ``owner`` holds it (the monitor's hooks were removed)."""
        self._streams.release(key, owner)
