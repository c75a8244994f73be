"""Compiled packing kernels of the write path (numba), one memory pass each.

numpy needs several passes over a float32 record to check that it is binary
and to pack it (compare, count, gather, narrow); with the gap coder's
bit-by-bit unpack they held the writer to ~0.2 G values/s. These kernels do
each job in one pass, release the GIL while they run, and compile once per
machine (``cache=True``). The gap coder's kernels are in
:mod:`spikestore.codecs._gap_kernels`.

* :func:`pack_f32` checks and packs a float32 record: 32 values at a time in
  a branch-free loop that LLVM vectorizes (8 lanes with AVX2/AVX-512), at
  about the speed of reading the record at all.
* :func:`popcount` counts the ones of a packed chunk.

The kernels are plain numba; the only intrinsics
(:mod:`spikestore.codecs._intrinsics`) are single LLVM instructions numba
does not offer. A hand-written LLVM IR packing compare with explicit
prefetching is kept in ``tools/ab_kernels.py`` for comparison: in alternated
runs it is worth less than 10% of the write path, at times slower
(``docs/performance.md``, "Packing kernel: plain numba or LLVM IR"), so the
plain code is what ships.

The numpy implementation it replaces (``np.packbits``) stays the reference
in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint32, uint64

from spikestore.codecs._gap_kernels import gaps8
from spikestore.codecs._intrinsics import ctpop64, load64, store32, store64

__all__ = ["pack_f32", "popcount", "warm_up"]

_F32_ONE = 0x3F800000  # bit pattern of float32 1.0
_ONE = np.uint32(_F32_ONE)
# A non-binary record is usually non-binary everywhere (voltages, gradients):
# the packing loop looks at its verdict every this many 32-value words.
_CHECK_WORDS = 64


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _mask32(u, start):  # type: ignore[no-untyped-def]
    """``(ones, bad)`` of the 32 values ``u[start:start + 32]``.

    Bit ``k`` of ``ones`` is set where value ``k`` is the float32 ``1.0``;
    ``bad`` is non-zero when any value is neither ``0.0`` nor ``1.0``:
    ``min(v, v ^ ONE)`` is zero exactly for those two bit patterns, so one
    OR over the 32 minimums is the whole check.

    A loop without branches, which LLVM unrolls and compares 8 lanes at a
    time (AVX2/AVX-512). The ``uint32(...)`` around each step matters:
    numba widens shifts and ORs of ``uint32`` to 64 bits, and 64-bit lanes
    halved the vector width (2x the instructions, ~1.7x the time of a
    packing pass over data in L2).
    """
    ones = uint32(0)
    stray = uint32(0)
    for k in range(32):
        v = u[start + k]
        ones = uint32(ones | uint32(uint32(v == _ONE) << uint32(k)))
        stray = uint32(stray | min(v, v ^ _ONE))
    return ones, uint32(stray != uint32(0))


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _mask_tail(u, start, count):  # type: ignore[no-untyped-def]
    """``(ones, bad)`` of ``count < 32`` values, one at a time (the end of the record)."""
    ones = uint32(0)
    bad = uint32(0)
    for i in range(count):
        v = u[start + i]
        if v == uint32(_F32_ONE):
            ones |= uint32(1) << uint32(i)
        elif v != uint32(0):
            bad |= uint32(1) << uint32(i)
    return ones, bad


@njit(nogil=True, cache=True, boundscheck=False)
def _pack_stream(u, out):  # type: ignore[no-untyped-def]
    """Pack all of ``u`` as one bit stream into ``out`` (``ceil(n / 32) * 4`` bytes); whether binary."""
    n = u.size
    bad = uint32(0)
    words = n // 32
    for j in range(words):
        ones, b = _mask32(u, j * 32)
        store32(out, j * 4, ones)
        bad |= b
        if (j % _CHECK_WORDS) == _CHECK_WORDS - 1 and bad:
            return False
    if n % 32:
        ones, b = _mask_tail(u, 32 * words, n % 32)
        store32(out, 4 * words, uint32(ones))
        bad |= b
    return bad == 0


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _emit_rows(acc, held, step, keep, out, r, row_bytes):  # type: ignore[no-untyped-def]
    """Store every whole row of ``step`` bits held in register ``acc``; ``(acc, held, r)`` after."""
    while held >= step:
        store32(out, r * row_bytes, uint32(acc & keep))
        r += 1
        acc >>= step
        held -= step
    return acc, held, r


@njit(nogil=True, cache=True, boundscheck=False)
def _pack_short_rows(u, row_len, out):  # type: ignore[no-untyped-def]
    """Pack rows of fewer than 32 values, each padded to whole bytes, in the packing loop itself.

    Each 32-value mask joins a 64-bit register (at most 31 bits are left
    over from the last one), and every row that completes is stored from
    it at once: the rows need no second pass over a packed stream. The
    number of rows a mask completes repeats with a short period (1, 1, 1,
    1, 1, 1, 2 for rows of 28), which the branch predictor learns.
    """
    n = u.size
    step = uint64(row_len)
    keep = (uint64(1) << step) - uint64(1)
    row_bytes = (row_len + 7) // 8
    acc = uint64(0)
    held = uint64(0)
    r = 0
    bad = uint32(0)
    words = n // 32
    for j in range(words):
        ones, b = _mask32(u, j * 32)
        bad |= b
        acc |= uint64(ones) << held
        acc, held, r = _emit_rows(acc, held + uint64(32), step, keep, out, r, row_bytes)
        if (j % _CHECK_WORDS) == _CHECK_WORDS - 1 and bad:
            return False
    if n % 32:
        ones, b = _mask_tail(u, 32 * words, n % 32)
        bad |= b
        acc |= uint64(ones) << held
        _emit_rows(acc, held + uint64(n % 32), step, keep, out, r, row_bytes)
    return bad == 0


#: Bits :func:`pack_f32` moves per 64-bit load when it cuts a stream into
#: rows: whole bytes, so each piece lands on a byte of its row.
_PIECE = 56


@njit(nogil=True, cache=True, boundscheck=False)
def pack_f32(u, row_len, out):  # type: ignore[no-untyped-def]
    """Pack a float32 record along its last axis if every value is exactly 0.0 or 1.0.

    The record is packed 32 values at a time, at about the speed of reading
    it. Rows whose length is a multiple of 32 are then done: the stream is
    the packed record. Shorter rows (most layers: 28, 14 or 10 neurons) are
    cut from a register as they complete (:func:`_pack_short_rows`); other
    rows are cut out of the packed stream (in L2 cache by then) 56 bits per
    load, each padded to whole bytes. Packing row by row instead cost ~4 ns
    of per-row overhead, 1.5x the whole record's time for rows of 28; cutting
    rows of 28 from the stream in a second pass, ~0.2x.

    Parameters
    ----------
    u : uint32[::1]
        The record, flattened, viewed as ``uint32`` (``-0.0`` and NaN are not binary).
    row_len : int
        Length of the last axis (at least 1); rows are packed to
        ``ceil(row_len / 8)`` bytes.
    out : uint8[::1]
        ``rows * ceil(row_len / 8) + 8`` bytes (the last 8 are scratch: each
        store may spill zeros past its row, which the next row overwrites).

    Returns
    -------
    bool
        Whether the record was binary (``out`` is valid only then).
    """
    n = u.size
    if row_len % 32 == 0:
        return _pack_stream(u, out)
    if row_len < 32:
        return _pack_short_rows(u, row_len, out)
    stream = np.empty(n // 8 + 16, dtype=np.uint8)  # + room for the last word and 64-bit loads
    if not _pack_stream(u, stream):
        return False
    row_bytes = (row_len + 7) // 8
    rows = n // row_len
    if row_len <= _PIECE:  # one load per row
        keep = (uint64(1) << uint64(row_len)) - uint64(1)
        for r in range(rows):
            bit = r * row_len
            store64(out, r * row_bytes, (load64(stream, bit >> 3) >> uint64(bit & 7)) & keep)
        return True
    for r in range(rows):
        src = r * row_len
        dst = r * row_bytes
        for q in range(0, row_len, _PIECE):
            bit = src + q
            left = min(_PIECE, row_len - q)
            w = load64(stream, bit >> 3) >> uint64(bit & 7)
            store64(out, dst + q // 8, w & ((uint64(1) << uint64(left)) - uint64(1)))
    return True


@njit(nogil=True, cache=True, boundscheck=False)
def popcount(b):  # type: ignore[no-untyped-def]
    """Number of set bits in a uint8 array."""
    n = b.size
    total = uint64(0)
    i = 0
    while i + 8 <= n:
        total += ctpop64(load64(b, i))
        i += 8
    while i < n:
        total += ctpop64(uint64(b[i]))
        i += 1
    return total


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel now, on tiny inputs.

    The first call of a kernel in a fresh environment compiles it, which
    takes seconds; :func:`spikestore.codecs._packing.load_kernels` calls this when a
    store opens, so the time is not charged to a record.
    """
    for writable in (True, False):  # a read-only input is a different numba type
        u = np.zeros(9, dtype=np.uint32)
        b = np.zeros(16, dtype=np.uint8)
        u.flags.writeable = b.flags.writeable = writable
        pack_f32(u, 3, np.zeros(17, dtype=np.uint8))
        popcount(b)
        gaps8(b, 8, 8, np.zeros(1, dtype=np.uint8), np.zeros(1, dtype=np.int64))
    from spikestore.codecs._neuron_kernels import warm_up as warm_neurons

    warm_neurons()
