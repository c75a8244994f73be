"""The pinned host buffers CUDA records are copied into: a pool, reused, bounded in bytes.

A CUDA record is copied from the device into page-locked ("pinned") host
memory, which an asynchronous copy needs. Allocating it (``cudaHostAlloc``)
is slow and can serialise the device, so :class:`PinnedPool` lends buffers
by size class and takes them back for the next record, never holding more
bytes than the store's queue budget (``docs/cuda.md`` §2). A buffer whose
copy may still be running when it comes back (a frame dropped before the
writer waited on it) is kept aside until its event says the copy is done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["MIN_BUFFER", "PinnedLease", "PinnedPool", "size_class"]

#: The smallest pinned buffer the pool hands out.
MIN_BUFFER = 512


def size_class(nbytes: int) -> int:
    """Bytes of the pooled buffer that holds ``nbytes``: the next power of two (at least 512).

    Classes let records of nearby shapes (the last, smaller batch of an
    epoch) share buffers; PyTorch's own pinned-memory cache rounds the same way.
    """
    return max(MIN_BUFFER, 1 << max(0, nbytes - 1).bit_length())


def _pinned(nbytes: int) -> Any:
    import torch

    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


class PinnedLease:
    """One pinned buffer lent by a :class:`PinnedPool`; give it back with :meth:`release`.

    A lease dropped without :meth:`release` (a frame refused by a full queue,
    a record refused by a later check) gives its buffer back when it is
    garbage, so the pool never shrinks for good.
    """

    __slots__ = ("__weakref__", "buffer", "pool", "size")

    def __init__(self, pool: PinnedPool, buffer: Any, size: int) -> None:
        self.pool: PinnedPool | None = pool
        self.buffer = buffer
        self.size = size

    def release(self, after: Any = None, keep: Any = None) -> None:
        """Give the buffer back to the pool (idempotent).

        ``after``: an event recorded after the last copy into the buffer, when
        nobody waited on it (a dropped frame). The pool then lends the buffer
        again only once ``after.query()`` says the copy is done, keeping
        ``keep`` (the device tensors that copy reads) alive until then.
        """
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.release(self, after, keep)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to give back to
            self.release()


class PinnedPool:
    """Pinned host buffers, reused, bounded in bytes.

    Parameters
    ----------
    max_bytes
        Bound on the bytes of all buffers the pool holds (lent or free): the
        store's ``max_pending_bytes``. One request larger than the bound is
        served alone (nothing else lent), and its buffer is freed on return.
    block
        When lending would pass the bound: wait for buffers to come back
        (``True``, the store's ``on_full="block"``), or refuse at once
        (``False``, ``on_full="drop"``: :meth:`acquire` returns ``None``).
    allocate
        ``allocate(nbytes)`` returns a new buffer (a 1-D ``uint8`` tensor);
        pinned memory by default. Tests pass plain tensors.
    stopped
        Called while waiting; when it returns ``True`` (the writer died, so
        nothing will come back) :meth:`acquire` returns ``None`` instead of
        waiting forever.
    """

    def __init__(self, max_bytes: int, *, block: bool = True,
                 allocate: Callable[[int], Any] | None = None,
                 stopped: Callable[[], bool] | None = None) -> None:
        self.max_bytes = max_bytes
        self.block = block
        self._allocate = allocate or _pinned
        self._stopped = stopped or (lambda: False)
        self._free: dict[int, list[Any]] = {}
        #: Buffers back from dropped frames whose copy may still run: (event, size, buffer, device tensors).
        self._settling: list[tuple[Any, int, Any, Any]] = []
        self._cond = threading.Condition()
        #: Bytes of all buffers the pool holds, lent or free.
        self.allocated_bytes = 0
        #: Bytes of the buffers lent out now.
        self.in_use_bytes = 0
        #: Buffers allocated (``cudaHostAlloc`` through PyTorch's pinned cache).
        self.allocations = 0
        #: Requests served with a buffer that came back.
        self.reuses = 0
        #: Free buffers dropped to make room for another size class.
        self.evictions = 0
        #: Requests refused (``block=False`` and full, or the writer died).
        self.refused = 0

    def acquire(self, nbytes: int) -> PinnedLease | None:
        """Lend a buffer of at least ``nbytes`` bytes, or ``None`` (see ``block``)."""
        size = size_class(nbytes)
        with self._cond:
            while True:
                if self._stopped():
                    self.refused += 1
                    return None
                self._settle()
                free = self._free.get(size)
                if free:
                    self.in_use_bytes += size
                    self.reuses += 1
                    return PinnedLease(self, free.pop(), size)
                if self.in_use_bytes == 0 or self.in_use_bytes + size <= self.max_bytes:
                    self._evict(size)
                    if self.allocated_bytes + size <= self.max_bytes or self.in_use_bytes == 0:
                        break
                if not self.block:
                    self.refused += 1
                    return None
                self._cond.wait(0.25)
            self.allocated_bytes += size
            self.in_use_bytes += size
            self.allocations += 1
        try:
            buffer = self._allocate(size)  # (outside the lock: the writer keeps returning buffers)
        except BaseException:
            with self._cond:
                self.allocated_bytes -= size
                self.in_use_bytes -= size
                self._cond.notify_all()
            raise
        return PinnedLease(self, buffer, size)

    def _evict(self, size: int) -> None:
        """Drop free buffers of other sizes, largest first, until ``size`` more bytes fit."""
        for other in sorted(self._free, reverse=True):
            bufs = self._free[other]
            while bufs and self.allocated_bytes + size > self.max_bytes:
                bufs.pop()
                self.allocated_bytes -= other
                self.evictions += 1

    def release(self, lease: PinnedLease, after: Any = None, keep: Any = None) -> None:
        """Take a lent buffer back (call :meth:`PinnedLease.release` instead)."""
        with self._cond:
            buffer, lease.buffer = lease.buffer, None
            if after is not None and not after.query():  # (a query, not a wait: never synchronises)
                self._settling.append((after, lease.size, buffer, keep))  # still lent until the copy ends
                return
            self._take_back(lease.size, buffer)

    def _take_back(self, size: int, buffer: Any) -> None:
        """A buffer nothing writes into any more: free for the next record (under the lock)."""
        self.in_use_bytes -= size
        if self.allocated_bytes > self.max_bytes:  # the one oversized buffer: not kept
            self.allocated_bytes -= size
        else:
            self._free.setdefault(size, []).append(buffer)
        self._cond.notify_all()

    def _settle(self) -> None:
        """Take back the buffers of dropped frames whose copies have ended (under the lock)."""
        if self._settling:
            pending = self._settling
            self._settling = []
            for event, size, buffer, keep in pending:
                if event.query():
                    self._take_back(size, buffer)
                else:
                    self._settling.append((event, size, buffer, keep))

    def stats(self) -> dict[str, int]:
        """The counters, as one dict (for benchmarks and logs)."""
        with self._cond:
            self._settle()
            return {"allocated_bytes": self.allocated_bytes, "in_use_bytes": self.in_use_bytes,
                    "allocations": self.allocations, "reuses": self.reuses,
                    "evictions": self.evictions, "refused": self.refused}
