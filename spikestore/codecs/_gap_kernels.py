"""Compiled kernels of the spike codec's gap coder (numba): spike positions and gap bytes.

numpy finds spike positions by unpacking every bit (``np.unpackbits`` +
``np.flatnonzero``), which stays the reference in the tests. :func:`gaps8`
takes them out of 64-bit words instead (popcount, count-trailing-zeros,
clear the lowest bit), numbers them over the real bits of padded rows, and
turns them into the codec's gap bytes and escapes, releasing the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from spikestore.codecs._intrinsics import ctpop64, cttz64, load64

__all__ = ["gaps8"]


#: Bytes of a packed chunk whose spike positions are gathered before their gaps.
_GAP_BLOCK = 1024


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _word_positions(w, base, pos, k):  # type: ignore[no-untyped-def]
    """Write ``base + i`` for every set bit ``i`` of word ``w`` to ``pos[k:]``; the new ``k``.

    Branch-light: the first six positions are written whether or not they
    exist (``pos`` needs 8 spare slots), so a random spike pattern costs no
    branch mispredictions; only words with more than six spikes loop (at
    5% firing a word holds 3.2 on average).
    """
    c = np.int64(ctpop64(w))
    for j in range(6):
        pos[k + j] = base + np.int64(cttz64(w))
        w &= w - uint64(1)
    for j in range(6, c):
        pos[k + j] = base + np.int64(cttz64(w))
        w &= w - uint64(1)
    return k + c


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _tail_word(b, start, stop):  # type: ignore[no-untyped-def]
    """The fewer than 8 bytes ``b[start:stop]`` as a word, zero-filled (no load past ``b``'s end)."""
    tail = np.zeros(8, dtype=np.uint8)
    tail[: stop - start] = b[start:stop]
    return load64(tail, 0)


@njit(nogil=True, cache=True, boundscheck=False)
def _block_positions(b, start, stop, pos):  # type: ignore[no-untyped-def]
    """Bit numbers of the ones in ``b[start:stop]`` (which may end in a partial word)."""
    whole = start + (stop - start) // 8 * 8
    k = 0
    for i in range(start, whole, 8):
        k = _word_positions(load64(b, i), np.int64(8 * i), pos, k)
    if whole < stop:
        k = _word_positions(_tail_word(b, whole, stop), np.int64(8 * whole), pos, k)
    return k


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _real_bits(w, row_span, row_bits, rows_per_word, real):  # type: ignore[no-untyped-def]
    """Word ``w``'s real bits side by side: its ``rows_per_word`` rows without their padding."""
    if rows_per_word == 2:  # the common case, unrolled
        return (w & real) | (((w >> uint64(32)) & real) << uint64(row_bits))
    c = uint64(0)
    for r in range(rows_per_word):
        c |= ((w >> uint64(r * row_span)) & real) << uint64(r * row_bits)
    return c


@njit(nogil=True, cache=True, boundscheck=False)
def _block_real_positions(b, start, stop, pos, row_span, row_bits):  # type: ignore[no-untyped-def]
    """:func:`_block_positions` numbered over real bits, for rows that tile 64-bit words.

    ``row_span`` divides 64: each word holds whole rows, so its padding is
    checked with one mask and its real bits are moved together before the
    positions are taken (no per-spike row arithmetic). Returns -1 when a
    padding bit is set. ``stop - start`` may end in a partial word.
    """
    rows_per_word = 64 // row_span
    real = (uint64(1) << uint64(row_bits)) - uint64(1)
    span = ~uint64(0) >> uint64(64 - row_span)  # (1 << 64 is undefined: not (1 << span) - 1)
    padding = uint64(0)
    for r in range(rows_per_word):
        padding |= (~real & span) << uint64(r * row_span)
    per_word = np.int64(rows_per_word * row_bits)  # real bits per word
    whole = start + (stop - start) // 8 * 8
    k = 0
    bad = uint64(0)
    for i in range(start, whole, 8):
        w = load64(b, i)
        bad |= w & padding
        k = _word_positions(_real_bits(w, row_span, row_bits, rows_per_word, real),
                            np.int64(i // 8) * per_word, pos, k)
    if whole < stop:  # the last, partial word
        w = _tail_word(b, whole, stop)
        bad |= w & padding
        k = _word_positions(_real_bits(w, row_span, row_bits, rows_per_word, real),
                            np.int64(whole // 8) * per_word, pos, k)
    return -1 if bad else k


@njit(nogil=True, cache=True, boundscheck=False)
def gaps8(b, row_span, row_bits, small, escapes):  # type: ignore[no-untyped-def]
    """Gaps between the spikes of a packed chunk, as bytes with escapes.

    Spike positions are numbered over the real bits only: each row occupies
    ``row_span`` bits of ``b`` (a multiple of 8), of which the first
    ``row_bits`` are real and the rest zero padding; pass
    ``row_span == row_bits`` for unpadded rows. Gap ``k`` is the number of
    zero bits before spike ``k`` since spike ``k - 1``: ``small[k] = min(gap,
    255)``, and each gap of 255 or more also appends ``gap - 255`` to
    ``escapes``.

    ``small`` and ``escapes`` must each hold ``popcount(b)`` values; returns
    ``(spikes, escapes_used)``, or ``(-1, 0)`` as soon as a spike turns up
    in a row's padding.
    """
    n = b.size
    pad = int(row_span - row_bits)
    # Rows of 8, 16, 32 or 64 bits (most layers: 28 neurons -> 32 bits) tile
    # the 64-bit words: their padding is dropped a word at a time.
    tiled = pad > 0 and row_span <= 64 and 64 % row_span == 0
    if tiled:
        pad = 0
    shift = -1  # row_span is often a power of two
    if row_span & (row_span - 1) == 0:
        shift = 0
        while (1 << shift) < row_span:
            shift += 1
    pos = np.empty(8 * _GAP_BLOCK + 8, dtype=np.int64)
    prev = np.int64(-1)
    k = 0
    e = 0
    for start in range(0, n, _GAP_BLOCK):
        stop = min(n, start + _GAP_BLOCK)
        if tiled:
            m = _block_real_positions(b, start, stop, pos, row_span, row_bits)
            if m < 0:
                return -1, 0
        else:
            m = _block_positions(b, start, stop, pos)
        if pad:  # rows that do not tile words: renumber over the real bits one spike at a time
            for i in range(m):
                p = pos[i]
                row = (p >> shift) if shift >= 0 else p // row_span
                if p - row * row_span >= row_bits:
                    return -1, 0
                pos[i] = p - row * pad
        if m:
            k, e = _block_gaps(pos, m, prev, small, k, escapes, e)
            prev = pos[m - 1]
    return k, e


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _block_gaps(pos, m, prev, small, k, escapes, e):  # type: ignore[no-untyped-def]
    """Append the gap bytes of positions ``pos[:m]`` (after ``prev``) to ``small[k:]``, escapes to ``escapes[e:]``.

    The gap bytes come from a loop without branches, which the compiler
    vectorizes; the rare block holding a gap of 255 or more is scanned
    again for its escapes. (One loop doing both ran at half the speed.)
    """
    g = pos[0] - prev - 1
    small[k] = min(g, 255)
    long = g >= 255
    for i in range(1, m):
        g = pos[i] - pos[i - 1] - 1
        small[k + i] = min(g, 255)
        long |= g >= 255
    if long:
        last = prev
        for i in range(m):
            g = pos[i] - last - 1
            last = pos[i]
            if g >= 255:
                escapes[e] = g - 255
                e += 1
    return k + m, e
