"""Candidate kernels for a faster write path, timed by ``tools/bench_write_floor.py``.

None of these ships: each is the fastest form found of one way to code a
frame, kept so that the floor the benchmark reports can be rerun.

* :func:`pack_gap_bytes`: the packing loop writing the gap bytes as it packs;
* :func:`rice`: a whole entropy coder in one pass: the spikes' positions over
  the real bits of padded rows, their gaps written as Golomb-Rice codes
  (parameter ``k``) straight into a bit stream, 1.01x the Shannon bound of
  i.i.d. spikes at 5%; :func:`unrice` reads it back, for the check.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types, uint32, uint64
from numba.extending import intrinsic

from spikestore.codecs import _gap_kernels as G
from spikestore.codecs import _intrinsics as I
from spikestore.codecs import _kernels as K

__all__ = ["pack_gap_bytes", "rice", "rice_parameter", "rice_room", "unrice"]

#: Bytes of a packed chunk whose positions :func:`rice` gathers before coding them.
_BLOCK = 1024
#: Zeros of a long gap's unary part are written this many at a time.
_ZEROS = 32


@intrinsic
def _ctlz64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@njit(nogil=True, cache=False, boundscheck=False)
def pack_gap_bytes(u, out, small):  # type: ignore[no-untyped-def]
    """Pack ``u`` as one bit stream into ``out`` and write its spikes' gap bytes (``min(gap, 255)``) to ``small``.

    The packing loop of ``_pack_stream`` with the gap extraction of each
    32-value mask inside it (four positions written whatever the count).
    Returns the number of spikes, -1 for a non-binary record, -2 when
    ``small`` (which needs 8 spare slots) is full.
    """
    bad = uint32(0)
    k = 0
    prev = np.int64(-1)
    room = small.size - 8
    for j in range(u.size // 32):
        ones, b = K._mask32(u, j * 32)
        I.store32(out, j * 4, ones)
        bad |= b
        w = uint64(ones)
        c = np.int64(I.ctpop64(w))
        base = np.int64(j * 32)
        last = prev
        for t in range(4):
            p = base + np.int64(I.cttz64(w))
            small[k + t] = min(p - last - 1, 255)
            last = p
            w &= w - uint64(1)
        for t in range(4, c):
            p = base + np.int64(I.cttz64(w))
            small[k + t] = min(p - last - 1, 255)
            last = p
            w &= w - uint64(1)
        if c:
            prev = base + np.int64(63 - _ctlz64(uint64(ones)))
        k += c
        if k > room:
            return -2
    return -1 if bad else k


def rice_parameter(p: float) -> int:
    """The Golomb-Rice ``k`` with the fewest expected bits a gap for i.i.d. spikes at rate ``p``."""
    def bits(k: int) -> float:
        r = (1 - p) ** (2 ** k)  # P(a gap is at least 2**k)
        return 1 + k + r / (1 - r)
    return min(range(24), key=bits) if 0 < p < 1 else 0


@njit(nogil=True, cache=False, boundscheck=False)
def rice(b, row_span, row_bits, k, out, pos):  # type: ignore[no-untyped-def]
    """Golomb-Rice code the gaps of packed chunk ``b``'s spikes into ``out``; the bytes written.

    Rows of ``row_span`` bits (dividing 64) hold ``row_bits`` real bits;
    gaps count real bits only, as the library's gap coder. Each gap ``g``
    is ``g >> k`` zeros, a one, then the low ``k`` bits of ``g``, written
    low bit first into a 64-bit register that is stored and advanced by its
    whole bytes after every code (no branch but for gaps of 32 * 2**k or
    more). ``pos`` holds ``8 * 1024 + 8`` positions; ``k <= 23``. Returns -1
    when a spike sits in a row's padding.
    """
    low = (uint64(1) << uint64(k)) - uint64(1)
    acc = uint64(0)
    held = uint64(0)
    o = 0
    prev = np.int64(-1)
    for start in range(0, b.size, _BLOCK):
        # the gap coder's own scan of a block: positions over the real bits (-1: a spike in the padding)
        m = G._block_real_positions(b, start, min(b.size, start + _BLOCK), pos, row_span, row_bits)
        if m < 0:
            return -1
        for i in range(m):
            g = uint64(pos[i] - prev - 1)
            prev = pos[i]
            q = g >> uint64(k)
            while q >= uint64(_ZEROS):  # a long gap: its zeros a register at a time
                held += uint64(_ZEROS)
                I.store64(out, o, acc)
                o += np.int64(held >> uint64(3))
                acc >>= (held >> uint64(3)) << uint64(3)
                held &= uint64(7)
                q -= uint64(_ZEROS)
            acc |= ((uint64(1) | ((g & low) << uint64(1))) << q) << held
            held += q + uint64(1) + uint64(k)
            I.store64(out, o, acc)
            o += np.int64(held >> uint64(3))
            acc >>= (held >> uint64(3)) << uint64(3)
            held &= uint64(7)
    I.store64(out, o, acc)
    return o + (1 if held else 0)


@njit(nogil=True, cache=False, boundscheck=False)
def unrice(code, count, k, pos):  # type: ignore[no-untyped-def]
    """Decode ``count`` gaps of :func:`rice`'s ``code`` into positions ``pos``, bit by bit."""
    bit = 0
    prev = -1
    for i in range(count):
        q = 0
        while not (code[bit >> 3] >> (bit & 7)) & 1:
            q += 1
            bit += 1
        bit += 1
        r = 0
        for j in range(k):
            r |= ((code[bit >> 3] >> (bit & 7)) & 1) << j
            bit += 1
        prev = prev + (q << k) + r + 1
        pos[i] = prev
    return (bit + 7) // 8


def rice_room(bits: int, spikes: int, k: int) -> int:
    """Bytes :func:`rice` may write for ``spikes`` gaps over ``bits`` real bits (plus its 8-byte stores)."""
    return math.ceil((bits / 2 ** k + spikes * (k + 1) + _ZEROS) / 8) + 16
