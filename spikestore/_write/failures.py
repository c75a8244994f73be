"""What the writer could not store, and how the training thread hears of it.

One bad stream costs only itself (:class:`StreamFailures`); records refused
by a full queue with ``on_full="drop"`` are counted (:class:`QueueDrops`).

A record that cannot be stored (a name the file system refuses, a value the
writer cannot encode, a bug in one stream's path) fails its stream only:
that stream keeps what it had committed and stops, the others go on, and the
error reaches the training thread at its next call into the store
(:class:`~spikestore.errors.StreamFailedError`, naming stream, step and
cause). Later records of a failed stream are refused on the training thread
with the same error, so nothing is dropped silently. Failures of the store
itself (a full disk, lost permissions, a read-only file system, no memory)
stop the writer: no other stream could be written either. Which is which is
decided by :func:`spikestore._failures.stops_writer`.

A record that changed in place before the writer stored it (a tensor handed
over with ``copy=False`` whose version counter moved, or a chunk the spike
codec saw change while encoding it) is a record that cannot be stored: it
fails its stream like any other, so the index ``Store.append`` returned for
every stored record is its position in the stream.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections import deque
from types import FrameType

from spikestore.errors import StreamFailedError

__all__ = ["QueueDrops", "StreamFailures"]

#: Records named one by one in a warning; the rest are counted.
_NAMED = 5

class StreamFailures:
    """The streams whose records can no longer be stored, and the failures not yet reported.

    Written by the writer thread (and its helper threads), read by the
    training thread.
    """

    def __init__(self, where: str) -> None:
        self._where = where
        self._lock = threading.Lock()
        self._errors: dict[str, StreamFailedError] = {}
        self._unreported: deque[StreamFailedError] = deque()

    def fail(self, key: str, step: int, cause: BaseException) -> None:
        """Record that stream ``key`` failed on its record of ``step`` (its first failure counts)."""
        err = StreamFailedError(
            f"stream {key!r} of {self._where} stopped recording at step {step}: {type(cause).__name__}: "
            f"{cause}. Its records up to its last commit stay readable; the other streams keep recording. "
            "Records appended to it from now on are refused.")
        err.__cause__ = cause
        err.stream, err.step = key, step
        with self._lock:
            if key in self._errors:
                return
            self._errors[key] = err
            self._unreported.append(err)

    def failed(self, key: str) -> bool:
        return key in self._errors

    def refuse(self, key: str) -> None:
        """Raise the stream's failure if ``key`` has failed (a record appended after it)."""
        err = self._errors.get(key)
        if err is not None:
            with self._lock:
                if err in self._unreported:
                    self._unreported.remove(err)
            raise err

    def raise_pending(self) -> None:
        """Raise the oldest failure not reported yet, once."""
        if not self._unreported:
            return
        with self._lock:
            err = self._unreported.popleft() if self._unreported else None
        if err is not None:
            raise err

    def summary(self) -> dict[str, str]:
        """``{stream: message}`` of every failed stream, for the root document."""
        with self._lock:
            return {key: f"{type(e.__cause__).__name__}: {e.__cause__}"[:2000] for key, e in self._errors.items()}


class QueueDrops:
    """Records dropped on the training thread because the queue was full (``on_full="drop"``).

    Counted, and warned of once.
    """

    def __init__(self, where: str, count: int = 0) -> None:
        self._where = where
        self.count = count
        self._warned = False

    def drop(self, max_bytes: int) -> None:
        """Count one dropped record; warn the first time."""
        self.count += 1
        if not self._warned:
            self._warned = True
            _warn(RuntimeWarning(
                f"spikestore: the writer queue for {self._where} is full ({max_bytes} bytes pending) and "
                "on_full='drop': records are being dropped. The count is kept in the store's writer.dropped "
                "attribute."))


def _warn(w: Warning) -> None:
    """Issue ``w`` at the first caller outside spikestore (a training loop, torch's hook call)."""
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "spikestore":
        frame, level = frame.f_back, level + 1
    warnings.warn(w, stacklevel=level)
