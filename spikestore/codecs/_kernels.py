"""Compiled kernels of the write path (numba), one memory pass each.

numpy needs several passes over a float32 record to check that it is binary
and to pack it (compare, count, gather, narrow), and a bit-by-bit unpack to
find spike positions; together they held the writer to ~0.2 G values/s.
These kernels do each job in one pass, release the GIL while they run, and
compile once per machine (``cache=True``).

* :func:`pack_f32` checks and packs a float32 record: 32 values at a time in
  a branch-free loop that LLVM vectorizes (8 lanes with AVX2/AVX-512), at
  about the speed of reading the record at all.
* :func:`gaps8` turns a packed chunk into the spike codec's gap bytes and
  escapes, skipping zero words and row padding.
* :func:`popcount` counts the ones of a packed chunk.

The kernels are plain numba. The only intrinsics left are single LLVM
instructions numba does not offer: popcount, count-trailing-zeros, and
unaligned 32/64-bit loads and stores into byte arrays. A hand-written LLVM IR
packing compare with explicit prefetching is kept in ``tools/ab_kernels.py``
for comparison: in alternated runs it is worth less than 10% of the write
path, at times slower (``docs/performance.md``, "Packing kernel: plain numba
or LLVM IR"), so the plain code is what ships.

The numpy implementations they replace stay the reference in the tests
(``np.packbits``, ``np.unpackbits`` + ``np.flatnonzero``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from llvmlite import ir
from numba import njit, types, uint32, uint64

if TYPE_CHECKING:
    # numba types an intrinsic by its typing function (typingctx, *args), not by
    # how compiled code calls it (*args): to mypy, an intrinsic is Any.
    def intrinsic(func: Any) -> Any: ...
else:
    from numba.extending import intrinsic

__all__ = ["gaps8", "pack_f32", "popcount"]

_F32_ONE = 0x3F800000  # bit pattern of float32 1.0
_ONE = np.uint32(_F32_ONE)
# A non-binary record is usually non-binary everywhere (voltages, gradients):
# the packing loop looks at its verdict every this many 32-value words.
_CHECK_WORDS = 64


@intrinsic
def _ctpop64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def _cttz64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@intrinsic
def _load64(typingctx, arr, i):  # type: ignore[no-untyped-def]
    """Little-endian uint64 from bytes ``arr[i:i+8]`` (an unaligned load)."""
    sig = types.uint64(arr, i)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        a = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(a.data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


def _unaligned_store(bits: int):  # type: ignore[no-untyped-def]
    """An intrinsic storing an unsigned ``bits``-bit ``v`` little endian into bytes ``arr[i:]``."""

    @intrinsic
    def store(typingctx, arr, i, v):  # type: ignore[no-untyped-def]
        sig = types.void(arr, i, v)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            a = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.bitcast(builder.gep(a.data, [args[1]]), ir.IntType(bits).as_pointer())
            builder.store(args[2], ptr, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return store


_store32 = _unaligned_store(32)
_store64 = _unaligned_store(64)

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
        _store32(out, j * 4, ones)
        bad |= b
        if (j % _CHECK_WORDS) == _CHECK_WORDS - 1 and bad:
            return False
    if n % 32:
        ones, b = _mask_tail(u, 32 * words, n % 32)
        _store32(out, 4 * words, uint32(ones))
        bad |= b
    return bad == 0


#: Bits :func:`pack_f32` moves per 64-bit load when it cuts a stream into
#: rows: whole bytes, so each piece lands on a byte of its row.
_PIECE = 56


@njit(nogil=True, cache=True, boundscheck=False)
def pack_f32(u, row_len, out):  # type: ignore[no-untyped-def]
    """Pack a float32 record along its last axis if every value is exactly 0.0 or 1.0.

    The record is packed 32 values at a time as one bit stream, at about
    the speed of reading it. Rows whose length is a multiple of 32 are then
    done: the stream is the packed record. Other rows are cut out of the
    stream (in L2 cache by then) 56 bits per load, each padded to whole
    bytes. Packing row by row instead cost ~4 ns of per-row overhead, 1.5x
    the whole record's time for rows of 28.

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
    stream = np.empty(n // 8 + 16, dtype=np.uint8)  # + room for the last word and 64-bit loads
    if not _pack_stream(u, stream):
        return False
    row_bytes = (row_len + 7) // 8
    rows = n // row_len
    if row_len <= _PIECE:  # most layers: one load per row
        keep = (uint64(1) << uint64(row_len)) - uint64(1)
        for r in range(rows):
            bit = r * row_len
            _store64(out, r * row_bytes, (_load64(stream, bit >> 3) >> uint64(bit & 7)) & keep)
        return True
    for r in range(rows):
        src = r * row_len
        dst = r * row_bytes
        for q in range(0, row_len, _PIECE):
            bit = src + q
            left = min(_PIECE, row_len - q)
            w = _load64(stream, bit >> 3) >> uint64(bit & 7)
            _store64(out, dst + q // 8, w & ((uint64(1) << uint64(left)) - uint64(1)))
    return True


@njit(nogil=True, cache=True, boundscheck=False)
def popcount(b):  # type: ignore[no-untyped-def]
    """Number of set bits in a uint8 array."""
    n = b.size
    total = uint64(0)
    i = 0
    while i + 8 <= n:
        total += _ctpop64(_load64(b, i))
        i += 8
    while i < n:
        total += _ctpop64(uint64(b[i]))
        i += 1
    return total


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
    c = np.int64(_ctpop64(w))
    for j in range(6):
        pos[k + j] = base + np.int64(_cttz64(w))
        w &= w - uint64(1)
    for j in range(6, c):
        pos[k + j] = base + np.int64(_cttz64(w))
        w &= w - uint64(1)
    return k + c


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _tail_word(b, start, stop):  # type: ignore[no-untyped-def]
    """The fewer than 8 bytes ``b[start:stop]`` as a word, zero-filled (no load past ``b``'s end)."""
    tail = np.zeros(8, dtype=np.uint8)
    tail[: stop - start] = b[start:stop]
    return _load64(tail, 0)


@njit(nogil=True, cache=True, boundscheck=False)
def _block_positions(b, start, stop, pos):  # type: ignore[no-untyped-def]
    """Bit numbers of the ones in ``b[start:stop]`` (which may end in a partial word)."""
    whole = start + (stop - start) // 8 * 8
    k = 0
    for i in range(start, whole, 8):
        k = _word_positions(_load64(b, i), np.int64(8 * i), pos, k)
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
        w = _load64(b, i)
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
