"""The flight recorder's ring: the last steps of every stream, under a byte budget.

Runs on the writer thread only. Records are held as the writer would store
them: bit-packed spikes as they are, every other record compressed with
zstd (level 1, which releases the GIL) when that saves bytes. Steps leave
the ring oldest first, once they fall more than ``before`` steps behind the
newest, or earlier when the ring is over its budget; the newest step is
never dropped (docs/flight-recorder.md §4).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from spikestore._write.capture import Prepared

__all__ = ["ENTRY_OVERHEAD", "Entry", "Ring"]

#: Bytes counted per held record beyond its payload: the Python objects that hold it.
ENTRY_OVERHEAD = 256
#: Records smaller than this are held as they are: zstd would save nothing.
_COMPRESS_FROM = 512


@dataclass(slots=True)
class Entry:
    """One record held by the ring, or leaving it to be written."""

    seq: int  # arrival order
    key: str
    step: int
    call: int
    time: float
    prepared: Prepared  # its ``stored`` is empty while ``packed`` holds the compressed bytes
    packed: bytes | None = None
    nbytes: int = 0

    def take(self) -> Prepared:
        """The record as the writer stores it (decompressed if it was compressed)."""
        if self.packed is not None:
            from numcodecs import Zstd

            p = self.prepared
            raw = Zstd().decode(self.packed)
            p.stored = np.frombuffer(raw, dtype=p.stored.dtype).reshape(p.stored.shape)
            self.packed = None
        return self.prepared


def hold(seq: int, key: str, step: int, call: int, time: float, p: Prepared, *, ring: bool = True,
         owned: bool = False) -> Entry:
    """An :class:`Entry` for ``p``: for the ring (``ring``) a copy of its own (``owned``: ``p.stored`` is
    already the record's alone, as bits packed on the training thread are), compressed when that saves
    bytes (raw records only); else ``p`` as it is, to be written at once."""
    e = Entry(seq, key, step, call, time, p)
    stored = p.stored
    if not ring:
        e.nbytes = stored.nbytes + ENTRY_OVERHEAD
        return e
    if p.encoding == "raw" and stored.nbytes >= _COMPRESS_FROM:
        from numcodecs import Zstd

        packed = bytes(Zstd(level=1).encode(np.ascontiguousarray(stored)))
        if len(packed) < stored.nbytes:
            e.packed = packed
            # Keep shape and dtype only: an empty strided view of the right dtype.
            p.stored = np.lib.stride_tricks.as_strided(np.empty(1, stored.dtype), stored.shape,
                                                       (0,) * stored.ndim, writeable=False)
    if e.packed is None and not owned:  # (bits packed here sit in the writer's scratch buffer, reused next)
        p.stored = stored.copy()
    e.nbytes = (len(e.packed) if e.packed is not None else stored.nbytes) + ENTRY_OVERHEAD
    return e


class Ring:
    """The held steps, oldest first.

    Parameters
    ----------
    before
        Steps held behind the newest one.
    max_bytes
        Budget of everything held (:attr:`Entry.nbytes`).
    """

    def __init__(self, before: int, max_bytes: int) -> None:
        self.before = before
        self.max_bytes = max_bytes
        self._steps: OrderedDict[int, list[Entry]] = OrderedDict()
        self._bytes: dict[int, int] = {}
        self.nbytes = 0
        #: Most bytes held at once.
        self.peak_bytes = 0
        #: Steps that left before they were ``before`` steps old, for the budget.
        self.shrunk_steps = 0
        self.newest = -1

    def __len__(self) -> int:
        return len(self._steps)

    def push(self, e: Entry) -> None:
        """Hold ``e``; drop the steps that fell behind, then those over the budget (never ``e``'s)."""
        held = self._steps.get(e.step)
        if held is None:
            held = self._steps[e.step] = []
            self._bytes[e.step] = 0
        held.append(e)
        self._bytes[e.step] += e.nbytes
        self.nbytes += e.nbytes
        self.newest = max(self.newest, e.step)
        while self._steps:
            oldest = next(iter(self._steps))
            if oldest >= self.newest - self.before:
                break
            self._drop(oldest)
        while self.nbytes > self.max_bytes:
            victim = next((s for s in self._steps if s != e.step), None)
            if victim is None:
                break  # e's step alone is over the budget: it is held alone
            self._drop(victim)
            self.shrunk_steps += 1
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def _drop(self, step: int) -> None:
        del self._steps[step]
        self.nbytes -= self._bytes.pop(step)

    def take(self, lo: int, hi: int) -> list[Entry]:
        """Remove and return the records of steps ``lo`` through ``hi``, in the order they arrived."""
        out: list[Entry] = []
        for step in [s for s in self._steps if lo <= s <= hi]:
            out.extend(self._steps[step])
            self._drop(step)
        out.sort(key=lambda e: e.seq)
        return out

    def clear(self) -> None:
        """Drop everything held: the store closes (records outside every window are not written), or
        the steps start afresh."""
        self._steps.clear()
        self._bytes.clear()
        self.nbytes = 0
        self.newest = -1
