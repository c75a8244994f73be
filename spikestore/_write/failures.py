"""One bad stream costs only itself: :class:`StreamFailures`.

A record that cannot be stored (a name the file system refuses, a value the
writer cannot encode, a bug in one stream's path) used to stop the writer
thread, and with it every stream. Now the writer contains such a failure to
its stream: that stream keeps what it had committed and stops, the others go
on, and the error reaches the training thread at its next call into the store
(:class:`~spikestore.errors.StreamFailedError`, naming stream, step and
cause). Later records of a failed stream are refused on the training thread
with the same error, so nothing is dropped silently. Failures of the store
itself (a full disk, lost permissions, a read-only file system, no memory)
still stop the writer: no other stream could be written either.
"""

from __future__ import annotations

import errno
import threading
from collections import deque

from spikestore.errors import StreamFailedError

__all__ = ["StreamFailures", "is_store_wide"]

#: OS errors that concern the whole store, not one stream.
_STORE_WIDE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM,
                                errno.ENOENT, errno.ESTALE, errno.EMFILE, errno.ENFILE, errno.EFBIG})


def is_store_wide(exc: BaseException) -> bool:
    """Whether ``exc`` stops the whole writer rather than one stream.

    Anything that is not an :class:`Exception` (``KeyboardInterrupt``...),
    memory exhaustion, and the I/O errors of the store's file system (full,
    read-only, permission lost, removed) are store-wide; other errors raised
    while one stream's record is prepared or stored concern that stream.
    """
    if not isinstance(exc, Exception) or isinstance(exc, MemoryError):
        return True
    return isinstance(exc, OSError) and exc.errno in _STORE_WIDE_ERRNOS


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
