"""What the training thread knows of each stream of a store: :class:`StreamTable`.

A record's index within its stream and its ``call`` within its step are
assigned here, when :meth:`Store.append <spikestore.Store.append>` hands it
over, and nowhere else. The index is exact by construction: every record
the writer receives is either stored at the index it was given, or its
stream fails (:class:`~spikestore.errors.StreamFailedError`, naming the step
from which the stream's records are missing) and stores nothing more. No
record is ever left out of a stream that goes on recording, so no later
index shifts.

The table also says which producer (a monitor) records each stream, so that
two monitors never interleave their records in one stream.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from spikestore.errors import InvalidArgumentError

__all__ = ["StreamTable"]


@dataclass(slots=True)
class _Stream:
    """One stream's training-thread state."""

    count: int = 0  # records handed to the writer: the index of the next one
    step: int = -1  # step of the last record handed over (-1: none since the store was opened)
    call: int = -1  # its call within that step
    owner: weakref.ref[object] | None = None  # the producer that claimed the stream
    owner_name: str = ""
    resumed: bool = False  # committed by an earlier session (a store opened for append)


class StreamTable:
    """The streams of one open store, as the training thread sees them.

    Parameters
    ----------
    where
        The store, for messages.
    counts
        Committed record count of each stream of a store opened for append.
    """

    def __init__(self, where: str, counts: dict[str, int]) -> None:
        self._where = where
        self._streams = {key: _Stream(count, resumed=True) for key, count in counts.items()}

    def __contains__(self, key: str) -> bool:
        return key in self._streams

    def recorded(self, key: str) -> bool:
        """Whether a record of ``key`` was handed over since the store was opened."""
        s = self._streams.get(key)
        return s is not None and s.step >= 0

    def resumed(self, key: str) -> bool:
        """Whether ``key`` was committed by an earlier session of the store."""
        s = self._streams.get(key)
        return s is not None and s.resumed

    def call(self, key: str, step: int) -> int:
        """The ``call`` a record of ``key`` at ``step`` gets: 0 for the first of its step, then +1."""
        s = self._streams.get(key)
        return s.call + 1 if s is not None and s.step == step else 0

    def handed_over(self, key: str, step: int, call: int, *, queued: bool) -> int | None:
        """Account for a record of ``key`` handed to the writer; return its index.

        A record the queue refused (``queued=False``: ``on_full="drop"``)
        takes no index, but keeps its ``call``: the gap says a record of the
        step is missing.
        """
        s = self._streams.setdefault(key, _Stream())
        s.step, s.call = step, call
        if not queued:
            return None
        s.count += 1
        return s.count - 1

    def claim(self, key: str, owner: object, what: str) -> None:
        """Reserve ``key`` for ``owner`` (named ``what`` in messages), or raise.

        Two producers writing one stream would interleave their records
        (and the stream's selection would describe only one of them).

        Raises
        ------
        InvalidArgumentError
            If another live producer holds the stream.
        """
        s = self._streams.setdefault(key, _Stream())
        holder = None if s.owner is None else s.owner()
        if holder is not None and holder is not owner:
            raise InvalidArgumentError(
                f"stream {key!r} of {self._where} is already recorded by {s.owner_name}; give this "
                f"{what} another quantity name (quantity='...') or record to another store")
        s.owner, s.owner_name = weakref.ref(owner), what

    def release(self, key: str, owner: object) -> None:
        """Undo :meth:`claim` (the producer stopped recording); a stream held by another stays held."""
        s = self._streams.get(key)
        if s is not None and s.owner is not None and s.owner() is owner:
            s.owner, s.owner_name = None, ""
