"""``Follower``: follow a run while it is written, decoding each committed record once.

A follower keeps, for each stream and each rank's part of it, how many
records it has consumed. :meth:`Follower.refresh` refreshes the run
(:meth:`Run.refresh <spikestore.Run.refresh>`: the documents), reads the
records committed since (only those: the partly filled last chunk that grew
is decoded from its first new row) and hands them, reduced to a few numbers
per record, to bounded accumulators (:mod:`spikestore.live._accumulators`),
per rank and merged. What it holds therefore depends on ``history``,
``window`` and the number of neurons, never on the length of the run.

What is read of each stream, and how, is :mod:`spikestore.live._state`'s
job. Each rank's part is read through ``run.rank(r)``, a run of one part, so a
record's step comes from the index chunks that hold it alone
(:meth:`Stream.index <spikestore.Stream.index>` with a range), not from the
whole index of a run of several ranks.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from spikestore._read.run import Run
from spikestore._read.run import open as open_run
from spikestore.backends import StoreURL
from spikestore.errors import InvalidArgumentError, StoreNotFoundError
from spikestore.live._snapshot import Snapshot
from spikestore.live._state import StreamState

__all__ = ["MAX_VALUES", "Follower"]

#: Decoded values a follower holds at once while reading new records (bits decode to float32: 16 MiB).
MAX_VALUES = 1 << 22


class Follower:
    """Follow a run while its writer appends to it (or a finished run): :meth:`refresh` gives a :class:`Snapshot`.

    Parameters
    ----------
    source
        The store's path or URL, or a :class:`~spikestore.Run` already
        open (the follower reads through it and leaves it open).
    storage_options
        For a URL, as :func:`spikestore.open` takes them.
    window
        Steps (the last ones seen, by step number) behind the per-neuron
        rates and the dead and saturated fractions.
    history
        At most this many points per stream in :attr:`StreamSummary.steps`
        (neighbouring steps merge into one point beyond it).
    backend
        As :func:`spikestore.open` takes it (``None``: from the path).

    Each refresh decodes the records committed since the previous one
    only, and reads nothing else but the documents and, every few seconds
    (``SIZES_EVERY``), the sizes of the streams that grew. A follower reads
    committed data only and never writes. :meth:`refresh` may be called from any thread (one at a time).
    """

    def __init__(self, source: str | os.PathLike[str] | StoreURL | Run, *,
                 storage_options: dict[str, Any] | None = None, window: int = 100, history: int = 2000,
                 backend: str | None = None) -> None:
        for name, value in (("window", window), ("history", history)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"Follower: {name} must be an integer >= 1, not {value!r}")
        self.window, self.history = window, history
        if isinstance(source, Run):
            if storage_options is not None or backend is not None:
                raise InvalidArgumentError("Follower: storage_options and backend apply to a path or URL, "
                                           "not to a Run already open")
            self.run, self._owned = source, False
        else:
            self.run, self._owned = open_run(source, backend=backend, storage_options=storage_options), True
        self._created = self.run.doc["created"]
        self._streams: dict[str, StreamState] = {}
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        """The store's path or URL."""
        return str(self.run.path)

    def refresh(self) -> Snapshot:
        """Read what was committed since the last refresh and summarise every stream.

        Raises what :meth:`Run.refresh <spikestore.Run.refresh>` and the
        reader raise (a store that went away, a damaged chunk).
        """
        with self._lock:
            began = time.perf_counter()
            run = self.run
            run.refresh()
            if run.doc["created"] != self._created:  # another store at the same path: start over
                self._created, self._streams = run.doc["created"], {}
            parts = self._parts()
            now = time.monotonic()
            new = 0
            streams = {}
            for key in run.streams:
                state, got = self._consume(key, parts, now)
                new += got
                streams[key] = state.summary(now)
            writers = {r: dict(p.writer) for r, p in parts.items()}
            failed: dict[str, str] = {}
            for w in writers.values():
                failed.update(w.get("failed_streams") or {})
            return Snapshot(path=self.path, time=time.time(), writer=dict(run.writer), failed=failed,
                            streams=streams, refresh_seconds=time.perf_counter() - began, new_records=new,
                            writers=writers, dropped=sum(int(w.get("dropped", 0)) for w in writers.values()))

    def _parts(self) -> dict[int, Run]:
        """Each rank's part that exists now, as a run of one part."""
        parts = {}
        for r in self.run.ranks:
            try:
                parts[r] = self.run.rank(r)
            except StoreNotFoundError:  # a rank still opening its part
                continue
        return parts

    def _consume(self, key: str, parts: dict[int, Run], now: float) -> tuple[StreamState, int]:
        """Read stream ``key``'s new records in every part; its state and the records read."""
        state = self._streams.get(key)
        if state is None:
            state = self._streams[key] = StreamState(key, self.window, self.history)
        new = 0
        for r, part in parts.items():
            if key not in part:
                continue
            stream = part[key]
            got = state.consume(r, stream, MAX_VALUES)
            if got < 0:  # fewer records than read: the stream was written again from the start
                del self._streams[key]
                return self._consume(key, parts, now)
            state.sizes(r, stream, got > 0, now, writing=part.writer["status"] == "open")
            new += got
        return state, new

    def close(self) -> None:
        """Close the run, when the follower opened it."""
        if self._owned:
            self.run.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<spikestore.live.Follower {self.path!r}: {len(self._streams)} streams>"
