"""Compiled kernels of the write path (numba), one memory pass each.

numpy needs several passes over a float32 record to check that it is binary
and to pack it (compare, count, gather, narrow), and a bit-by-bit unpack to
find spike positions; together they held the writer to ~0.2 G values/s.
These kernels do each job in one pass, release the GIL while they run, and
compile once per machine (``cache=True``).

* :func:`pack_f32` checks and packs a float32 record: 32 values at a time are
  compared as a vector and their results gathered into a 32-bit mask (AVX2's
  ``vmovmskps`` on x86), close to the speed of reading the record at all.
* :func:`gaps8` turns a packed chunk into the spike codec's gap bytes and
  escapes, skipping zero words and row padding.
* :func:`popcount` counts the ones of a packed chunk.

The numpy implementations they replace stay the reference in the tests
(``np.packbits``, ``np.unpackbits`` + ``np.flatnonzero``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types, uint32, uint64
from numba.extending import intrinsic

__all__ = ["gaps8", "pack_f32", "popcount"]

_F32_ONE = 0x3F800000  # bit pattern of float32 1.0
# A non-binary record is usually non-binary everywhere (voltages, gradients):
# the packing loop looks at its verdict every this many 32-value words.
_CHECK_WORDS = 64


def _lane_mask(lanes: int):  # type: ignore[no-untyped-def]
    """An intrinsic ``(ones, bad)`` over ``lanes`` uint32 values ``arr[start:start + lanes]``.

    Bit ``k`` of ``ones`` is set where value ``k`` is the float32 ``1.0``,
    bit ``k`` of ``bad`` where it is neither ``0.0`` nor ``1.0``. The values
    are loaded as one vector, and each comparison's lanes become one
    integer (``vmovmskps`` on x86).
    """

    @intrinsic
    def mask(typingctx, arr, start):  # type: ignore[no-untyped-def]
        sig = types.UniTuple(types.uint32, 2)(arr, start)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            a = context.make_array(signature.args[0])(context, builder, args[0])
            vec = ir.VectorType(ir.IntType(32), lanes)
            ptr = builder.bitcast(builder.gep(a.data, [args[1]]), vec.as_pointer())
            v = builder.load(ptr, align=4)
            is_one = builder.icmp_unsigned("==", v, ir.Constant(vec, [_F32_ONE] * lanes))
            non_zero = builder.icmp_unsigned("!=", v, ir.Constant(vec, [0] * lanes))
            bad = builder.and_(non_zero, builder.not_(is_one))
            word, i32 = ir.IntType(lanes), ir.IntType(32)

            def as_u32(bits):  # type: ignore[no-untyped-def]
                w = builder.bitcast(bits, word)
                return w if lanes == 32 else builder.zext(w, i32)

            return context.make_tuple(builder, signature.return_type, [as_u32(is_one), as_u32(bad)])

        return sig, codegen

    return mask


_mask8 = _lane_mask(8)
_mask16 = _lane_mask(16)
_mask32 = _lane_mask(32)


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
def pack_f32(u, row_len, out):  # type: ignore[no-untyped-def]
    """Pack a float32 record along its last axis if every value is exactly 0.0 or 1.0.

    One pass: each row is read 32 values at a time (its last, shorter piece
    8, 16 or 32 at a time, reading past the row's end where the record
    goes on), and its bits are stored straight into ``out``.

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
    bad = uint32(0)
    if row_len % 32 == 0:  # rows are whole 32-value words: the record is one bit stream
        for j in range(n // 32):
            ones, b = _mask32(u, j * 32)
            _store32(out, j * 4, ones)
            bad |= b
            if (j % _CHECK_WORDS) == _CHECK_WORDS - 1 and bad:
                return False
        return bad == 0
    row_bytes = (row_len + 7) // 8
    rows = n // row_len
    whole = row_len // 32  # full 32-value pieces per row
    rest = row_len - 32 * whole  # 1..31 values left
    lanes = 8 if rest <= 8 else (16 if rest <= 16 else 32)
    keep = (uint32(1) << uint32(rest)) - uint32(1)
    for r in range(rows):
        src = r * row_len
        dst = r * row_bytes
        for k in range(whole):
            ones, b = _mask32(u, src + 32 * k)
            _store32(out, dst + 4 * k, ones)
            bad |= b
        s = src + 32 * whole
        if s + lanes <= n:
            if lanes == 8:
                ones, b = _mask8(u, s)
            elif lanes == 16:
                ones, b = _mask16(u, s)
            else:
                ones, b = _mask32(u, s)
            ones &= keep
            b &= keep
        else:
            ones, b = _mask_tail(u, s, rest)
        _store64(out, dst + 4 * whole, uint64(ones))
        bad |= b
        if (r % 256) == 255 and bad:
            return False
    return bad == 0


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


@njit(nogil=True, cache=True, boundscheck=False)
def _block_positions(b, start, stop, pos):  # type: ignore[no-untyped-def]
    """Bit numbers of the ones in ``b[start:stop]`` (``stop - start`` a multiple of 8).

    Branch-light: for every word the first six positions are written
    whether or not they exist (``pos`` needs 8 spare slots), so a random
    spike pattern costs no branch mispredictions; only words with more than
    six spikes loop (at 5% firing a word holds 3.2 on average).
    """
    k = 0
    for i in range(start, stop, 8):
        w = _load64(b, i)
        c = np.int64(_ctpop64(w))
        base = np.int64(8 * i)
        for j in range(6):
            pos[k + j] = base + np.int64(_cttz64(w))
            w &= w - uint64(1)
        for j in range(6, c):
            pos[k + j] = base + np.int64(_cttz64(w))
            w &= w - uint64(1)
        k += c
    return k


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
    pad = np.int64(row_span - row_bits)
    shift = -1  # row_span is often a power of two (28 neurons -> 32 bits)
    if row_span & (row_span - 1) == 0:
        shift = 0
        while (1 << shift) < row_span:
            shift += 1
    pos = np.empty(8 * _GAP_BLOCK + 8, dtype=np.int64)
    tail = np.zeros(8, dtype=np.uint8)
    prev = np.int64(-1)
    k = 0
    e = 0
    for start in range(0, n, _GAP_BLOCK):
        stop = min(n, start + _GAP_BLOCK)
        whole = start + (stop - start) // 8 * 8
        m = _block_positions(b, start, whole, pos)
        if whole < stop:  # the last, partial word
            tail[:] = 0
            tail[: stop - whole] = b[whole:stop]
            w = _load64(tail, 0)
            while w:
                pos[m] = np.int64(8 * whole) + np.int64(_cttz64(w))
                w &= w - uint64(1)
                m += 1
        for i in range(m):
            p = pos[i]
            if pad:
                row = (p >> shift) if shift >= 0 else p // row_span
                if p - row * row_span >= row_bits:
                    return -1, 0
                p -= row * pad
            g = p - prev - 1
            prev = p
            small[k] = min(g, 255)
            if g >= 255:
                escapes[e] = g - 255
                e += 1
            k += 1
    return k, e


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel now, on tiny inputs.

    The first call of a kernel in a fresh environment compiles it, which
    takes seconds; a writer or a test calls this first so the time is not
    charged to a record.
    """
    for writable in (True, False):  # a read-only input is a different numba type
        u = np.zeros(9, dtype=np.uint32)
        b = np.zeros(16, dtype=np.uint8)
        u.flags.writeable = b.flags.writeable = writable
        pack_f32(u, 3, np.zeros(17, dtype=np.uint8))
        popcount(b)
        gaps8(b, 8, 8, np.zeros(1, dtype=np.uint8), np.zeros(1, dtype=np.int64))
