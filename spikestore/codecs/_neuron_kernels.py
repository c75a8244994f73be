"""Compiled kernels of the spike codec's neurons mode (numba; see :mod:`spikestore.codecs._neurons`).

Loaded with the other kernels (:func:`spikestore.codecs._packing.load_kernels`):
they release the GIL and compile once per machine (``cache=True``).
Arithmetic is in ``uint64``; every value of the range coder fits 33 bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

__all__ = ["column_counts", "decode_bits", "encode_bits", "last_nonzero", "warm_up"]

#: Probabilities of a spike are integers ``q / 2**PROB_BITS`` (docs/format.md §6.1).
PROB_BITS = 12
_ONE = 1 << PROB_BITS
_TOP = 1 << 24


def _spread_table() -> np.ndarray:
    """``_SPREAD[x]``: byte ``x``'s bit ``i`` in byte lane ``i`` of a ``uint64`` (eight counters side by side)."""
    x = np.arange(256, dtype=np.uint64)
    out = np.zeros(256, dtype=np.uint64)
    for i in range(8):
        out |= ((x >> np.uint64(i)) & np.uint64(1)) << np.uint64(8 * i)
    return out


_SPREAD = _spread_table()


@njit(nogil=True, cache=True, boundscheck=False)
def column_counts(b, width, start, stop, lag, ones, after, both):  # type: ignore[no-untyped-def]
    """Add, per bit column of rows ``start:stop`` of ``width`` bytes, its spikes to ``ones``, the spikes
    ``lag`` rows earlier (rows ``>= lag`` only) to ``after``, and the spikes that follow one to ``both``.

    Eight byte-wide counters per byte column (one ``uint64``), flushed every 255 rows.
    """
    acc = np.zeros(width, dtype=np.uint64)
    acca = np.zeros(width, dtype=np.uint64)
    accb = np.zeros(width, dtype=np.uint64)
    t = start
    while t < stop:
        end = min(stop, t + 255)
        for row in range(t, end):
            base = row * width
            if row >= lag:
                prev = (row - lag) * width
                for j in range(width):
                    x = b[base + j]
                    p = b[prev + j]
                    acc[j] += _SPREAD[x]
                    acca[j] += _SPREAD[p]
                    accb[j] += _SPREAD[x & p]
            else:
                for j in range(width):
                    acc[j] += _SPREAD[b[base + j]]
        for j in range(width):
            for i in range(8):
                ones[8 * j + i] += (acc[j] >> uint64(8 * i)) & uint64(0xFF)
                after[8 * j + i] += (acca[j] >> uint64(8 * i)) & uint64(0xFF)
                both[8 * j + i] += (accb[j] >> uint64(8 * i)) & uint64(0xFF)
            acc[j] = 0
            acca[j] = 0
            accb[j] = 0
        t = end


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _shift_low(low, cache, pending, out, pos):  # type: ignore[no-untyped-def]
    """LZMA's ``shift_low``: settle the top byte of ``low`` (carry included); the new state, ``pos`` -1 when full."""
    if low < uint64(0xFF000000) or low >= uint64(1 << 32):
        carry = low >> uint64(32)
        temp = cache
        while pending:
            if pos >= out.size:
                return low, cache, pending, -1
            out[pos] = (temp + carry) & uint64(0xFF)
            pos += 1
            temp = uint64(0xFF)
            pending -= 1
        cache = (low >> uint64(24)) & uint64(0xFF)
    pending += 1
    low = (low & uint64(0x00FFFFFF)) << uint64(8)
    return low, cache, pending, pos


@njit(nogil=True, cache=True, boundscheck=False)
def encode_bits(b, s, r, k, d, lag, m, q, out):  # type: ignore[no-untyped-def]
    """Range-code model rows ``< m`` of ``b`` with spike probabilities ``q`` (shared by groups of ``d`` packed
    rows); bytes written, or -1 if ``out`` fills."""
    w = (k // d) * r
    low = uint64(0)
    rng = uint64(0xFFFFFFFF)
    cache = uint64(0)
    pending = 1
    pos = 0
    for t in range(m):
        for kk in range(k):
            base = (t * k + kk) * s
            prev = ((t - lag) * k + kk) * s
            for jb in range(s):
                x = b[base + jb]
                ctx = b[prev + jb] if t >= lag else np.uint8(0)
                qo = (kk // d) * r + 8 * jb
                for i in range(min(8, r - 8 * jb)):
                    p1 = q[((ctx >> i) & 1) * w + qo + i]
                    if p1 == 0 or p1 == _ONE:
                        continue
                    bound = (rng >> uint64(PROB_BITS)) * uint64(_ONE - p1)
                    spike = uint64(0) - uint64((x >> i) & 1)  # all ones for a spike (no branch to mispredict)
                    low += bound & spike
                    rng = ((rng - bound) & spike) | (bound & ~spike)
                    while rng < uint64(_TOP):
                        rng = rng << uint64(8)
                        low, cache, pending, pos = _shift_low(low, cache, pending, out, pos)
                        if pos < 0:
                            return -1
    for _ in range(5):
        low, cache, pending, pos = _shift_low(low, cache, pending, out, pos)
        if pos < 0:
            return -1
    return pos


@njit(nogil=True, cache=True, boundscheck=False)
def decode_bits(data, s, r, k, d, lag, m, q, dest):  # type: ignore[no-untyped-def]
    """Decode model rows ``< m`` into the zeroed ``dest``; bytes of ``data`` read, or -1 if it ends early."""
    w = (k // d) * r
    size = data.size
    if size < 5:
        return -1
    code = uint64(0)
    for i in range(5):
        code = ((code << uint64(8)) | uint64(data[i])) & uint64(0xFFFFFFFF)
    pos = 5
    rng = uint64(0xFFFFFFFF)
    for t in range(m):
        for kk in range(k):
            base = (t * k + kk) * s
            prev = ((t - lag) * k + kk) * s
            for i in range(r):
                c = 0
                if t >= lag:
                    c = (dest[prev + (i >> 3)] >> (i & 7)) & 1
                p1 = q[c * w + (kk // d) * r + i]
                if p1 == 0:
                    continue
                bit = 1
                if p1 != _ONE:
                    bound = (rng >> uint64(PROB_BITS)) * uint64(_ONE - p1)
                    if code < bound:
                        rng = bound
                        bit = 0
                    else:
                        code -= bound
                        rng -= bound
                    while rng < _TOP:
                        if pos >= size:
                            return -1
                        rng = (rng << uint64(8)) & uint64(0xFFFFFFFF)
                        code = ((code << uint64(8)) | uint64(data[pos])) & uint64(0xFFFFFFFF)
                        pos += 1
                if bit:
                    dest[base + (i >> 3)] |= np.uint8(1 << (i & 7))
    return pos


@njit(nogil=True, cache=True, boundscheck=False)
def last_nonzero(b):  # type: ignore[no-untyped-def]
    """Index of the last non-zero byte of ``b`` (-1: none)."""
    i = b.size - 1
    while i >= 0 and b[i] == 0:
        i -= 1
    return i


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel now, on tiny inputs, writable and read-only."""
    for writable in (True, False):
        b = np.zeros(8, dtype=np.uint8)
        b.flags.writeable = writable
        column_counts(b, 1, 0, 8, 1, np.zeros(8, np.int64), np.zeros(8, np.int64), np.zeros(8, np.int64))
        last_nonzero(b)
        q = np.zeros(16, dtype="<u2")
        q.flags.writeable = writable
        out = np.zeros(16, dtype=np.uint8)
        encode_bits(b, 1, 8, 1, 1, 1, 8, q, out)
        decode_bits(out, 1, 8, 1, 1, 1, 8, q, np.zeros(8, dtype=np.uint8))
