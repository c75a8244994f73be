"""The writer's byte-bounded queue and the messages that travel in it with the frames.

Frames (records) and control messages share one FIFO, so a flush or a
stream-document update takes effect exactly after the records handed over
before it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ByteQueue", "Flush", "Mark", "Meta", "Stop"]


@dataclass(slots=True)
class Flush:
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class Meta:
    """A stream-document update (selection, attrs) that travels in order."""

    key: str
    selection: dict[str, Any] | None
    attrs: dict[str, Any]


@dataclass(slots=True)
class Mark:
    """``store.trigger(reason)`` at ``step``, in order with the records (a flight-recorded store)."""

    step: int
    reason: str


@dataclass(slots=True)
class Stop:
    """Close: commit everything with exact array lengths, then end the thread."""

    done: threading.Event = field(default_factory=threading.Event)


class ByteQueue:
    """A FIFO bounded by the bytes of the frames it holds.

    Bytes are released when the writer is *done* with a frame, not when it
    dequeues it, so the bound covers everything the writer still holds.
    A single frame larger than the bound is let through when the queue is
    empty (blocking it forever would be a hang).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.pending = 0
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self.dead = False
        self.waiting = 0  # flushes/closes queued and not yet done: someone waits for the writer

    def put(self, item: Any, nbytes: int, *, block: bool, waited_on: bool = False) -> bool:
        with self._cond:
            while not self.dead and self.pending > 0 and self.pending + nbytes > self.max_bytes:
                if not block:
                    return False
                self._cond.wait(0.25)
            if self.dead:
                return False
            self._items.append(item)
            self.pending += nbytes
            self.waiting += waited_on
            self._cond.notify_all()
            return True

    def done_waiting(self) -> None:
        with self._cond:
            self.waiting -= 1

    def take_all(self, timeout: float) -> list[Any]:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            items = list(self._items)
            self._items.clear()
            return items

    def release(self, nbytes: int) -> None:
        with self._cond:
            self.pending -= nbytes
            self._cond.notify_all()

    def kill(self) -> None:
        with self._cond:
            self.dead = True
            self._items.clear()
            self.pending = 0
            self.waiting = 0
            self._cond.notify_all()
