"""Mode 4 of the spike codec, ``neurons``: each neuron's own rate, given its previous time step.

Real layers are not i.i.d.: most neurons are nearly silent, a few fire
often, and a LIF neuron that just fired has been reset. This mode views a
chunk as model rows of ``W`` neurons (``K`` packed rows of ``R`` real bits
each) and codes every bit with a binary range coder whose probability of a
spike depends on the neuron and on the same neuron ``L`` model rows earlier
(its previous time step; silence before the chunk's first ``L`` rows).
Groups of ``D`` packed rows (the rows of a channel's image) may share
their probabilities, which then cost less in the chunk than they save. The
probabilities are counted per chunk and stored in it (12 bits each, zstd),
so the coder is static: both sides know every probability before the first
bit. Rows past the last one with a spike are not coded.

docs/format.md §6.1 specifies the bytes. The range coder is LZMA's (32-bit
range, 64-bit low with carry, a byte out per 8 bits of range) with 12-bit
probabilities. It codes one bit at a time, ~5 ns a bit compiled
(:mod:`spikestore.codecs._neuron_kernels`, numba, GIL released): the
encoder tries this mode only where numba's kernels are loaded; the decoder
falls back to plain Python without them (correct, ~100x slower: ~0.5 us a bit).
"""

from __future__ import annotations

import importlib.util
import math
import struct
from typing import Any

import numpy as np

from spikestore.codecs import _packing as packing
from spikestore.codecs._bounded import zstd_into
from spikestore.errors import ChecksumError

__all__ = ["PROB_BITS", "candidates", "decode_neurons", "encode_neurons"]

#: Probabilities of a spike are integers ``q / 2**PROB_BITS``.
PROB_BITS = 12
_ONE = 1 << PROB_BITS
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
_LAYOUT = struct.Struct("<IIIIIQQ")  # S, R, K, D, L, M, z
#: Model rows a chunk needs before a layout is tried: with fewer samples a neuron's own rates cost more
#: in the table than they save.
_MIN_ROWS = 256
#: A layout is first counted on 1/_SAMPLE of the model rows of a chunk, when it has _SAMPLE_FROM or more.
_SAMPLE = 8
_SAMPLE_FROM = 1024


#: Per bit column of a model row: spikes, spikes one lag earlier, spikes after a spike; and the rows counted.
Totals = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def _column_totals(buf: np.ndarray, s: int, k: int, lag: int, pieces: tuple[tuple[int, int], ...]) -> Totals:
    """:data:`Totals` of the model rows of ``pieces`` (ranges ``start:stop``) of ``K * S`` bytes."""
    from spikestore.codecs._neuron_kernels import column_counts

    width = k * s
    ones, after, both = (np.zeros(8 * width, dtype=np.int64) for _ in range(3))
    for start, stop in pieces:
        column_counts(buf, width, start, stop, lag, ones, after, both)
    return ones, after, both, sum(stop - start for start, stop in pieces)


def _context_counts(totals: Totals, s: int, r: int, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, ones)`` per context ``c * P + j`` (probability ``j``, shared by ``d`` packed rows; previous
    bit ``c``) from a model row's :data:`Totals`."""
    def shared(a: np.ndarray) -> np.ndarray:
        out: np.ndarray = a.reshape(k // d, d, 8 * s)[:, :, :r].sum(axis=1)
        return out.reshape(-1)

    ones, after, both = (shared(a) for a in totals[:3])
    rows = d * totals[3]
    return np.concatenate([rows - after, after]), np.concatenate([ones - both, both])


def candidates(shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Layouts ``(K, D, L)`` worth trying for a chunk of packed ``shape`` ``(records, d1, ..., dm, S)``.

    The neurons of a record are its axes after the batch axis, and after
    the time axis of multi-step records: ``(batch, *neurons)`` records,
    one per time step (the previous time step is ``d1`` model rows back,
    in the previous record), and ``(time, batch, *neurons)`` records of a
    multi-step layer (``d2`` model rows back). A record of one sample
    (``(neurons,)``) is one model row, following the previous record.
    Where the neurons have more than one axis before the packed one
    (channels, rows of an image), a second layout shares each
    probability among the packed rows of a channel (``D``): with few
    records per chunk, a probability per position costs more in the
    table than it saves.
    """
    dims = shape[1:-1]
    if not dims:
        return [(1, 1, 1)]
    out = []
    for first in (1, 2) if len(dims) >= 2 else (1,):  # the neuron axes start after the batch axis
        k = math.prod(dims[first:])
        out.append((k, 1, dims[first - 1]))
        if len(dims) - first >= 2:
            out.append((k, math.prod(dims[first + 1:]), dims[first - 1]))
    return list(dict.fromkeys(out))


def _cost_table(spike: bool) -> np.ndarray:
    """Bits a coded decision costs, by its ``q``: ``-log2(q / 4096)`` for a spike, ``-log2(1 - q / 4096)`` for
    a silent bit; 0 at ``q`` 0 and 4096, which code nothing."""
    q = np.arange(_ONE + 1, dtype=np.float64) / _ONE
    with np.errstate(divide="ignore"):
        cost = -np.log2(q if spike else 1 - q)
    cost[[0, _ONE]] = 0.0
    return cost


_SPIKE_BITS, _SILENT_BITS = _cost_table(True), _cost_table(False)


def _cross_entropy_bits(values: np.ndarray, ones: np.ndarray, q: np.ndarray) -> float:
    """Bits the range coder spends, to within its rounding: ``-sum log2`` of each bit's probability."""
    # (products and sums, not ``@``: a BLAS dot of mixed types took 1 ms here, and BLAS may start threads)
    return float((ones * _SPIKE_BITS[q]).sum() + ((values - ones) * _SILENT_BITS[q]).sum())


def _guess(values: np.ndarray, ones: np.ndarray) -> tuple[float, float, np.ndarray]:
    """``(bytes with the table, bytes of the coded bits, q)`` of contexts with ``values`` bits and ``ones`` spikes.

    The table is guessed at 1.5 bytes a probability other than 0 and 1 (zstd of the ``u16`` values).
    """
    q = _probabilities(values, ones)
    coded = _cross_entropy_bits(values, ones, q) / 8
    return coded + 1.5 * np.count_nonzero((q > 0) & (q < _ONE)), coded, q


def _probabilities(values: np.ndarray, ones: np.ndarray) -> np.ndarray:
    """Each context's spike probability in units of ``2**-PROB_BITS``: 0 and ``2**PROB_BITS`` only when certain."""
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.rint(ones * _ONE / np.maximum(values, 1)).astype(np.int64)
    q = np.clip(q, 1, _ONE - 1)
    q[ones == 0] = 0
    q[(ones == values) & (values > 0)] = _ONE
    out: np.ndarray = q.astype("<u2")
    return out


def encode_neurons(buf: np.ndarray, shape: tuple[int, ...], row_bits: int | None, zstd: Any,
                   beat: int | None) -> bytes | None:
    """The mode 4 payload of packed chunk ``buf`` of ``shape``, or ``None`` when it would not be below ``beat`` bytes.

    ``row_bits`` is the real bits of each packed row (``None``: every bit
    is real; a set padding bit makes every bit real too). Each layout of
    :func:`candidates` with :data:`_MIN_ROWS` model rows or more is
    counted, first on a sample of its rows when the chunk is large, and
    the one whose coded size (known from the counts) is smallest is coded.
    """
    if not packing.kernels_ready():
        return None
    from spikestore.codecs._neuron_kernels import encode_bits, last_nonzero

    s = shape[-1]
    n = buf.size
    r = row_bits if row_bits and row_bits % 8 and (row_bits + 7) // 8 == s else 8 * s
    last = int(last_nonzero(buf))
    totals: dict[tuple[int, int, tuple[tuple[int, int], ...]], Totals] = {}

    def counted(k: int, lag: int, pieces: tuple[tuple[int, int], ...]) -> Totals:
        # (layouts that differ only in D share their counts)
        if (k, lag, pieces) not in totals:
            totals[k, lag, pieces] = _column_totals(buf, s, k, lag, pieces)
        return totals[k, lag, pieces]

    best: tuple[float, float, int, int, int, int, np.ndarray] | None = None
    for k, d, lag in candidates(shape):
        w = k // d * r
        if 4 * w > n or n // (k * s) < _MIN_ROWS:
            continue
        m = last // (k * s) + 1  # rows after the last spike are not coded
        if beat is not None and m >= _SAMPLE_FROM:
            # A first look at an eighth of the rows, in two pieces: the entropy of fewer samples is
            # lower, so a layout that does not win on the sample would not win on the whole chunk.
            piece = m // (2 * _SAMPLE)
            pieces = ((0, piece), (m // 2, m // 2 + piece))
            sample = _context_counts(counted(k, lag, pieces), s, r, k, d)
            if _guess(*sample)[0] * m / (2 * piece) >= beat:
                continue
        guess, coded, q = _guess(*_context_counts(counted(k, lag, ((0, m),)), s, r, k, d))
        if best is None or guess < best[0]:
            best = (guess, coded, k, d, lag, m, q)
    if best is None:
        return None
    _, coded, k, d, lag, m, q = best
    if r != 8 * s and np.any(buf.reshape(-1, s)[:, -1] >> np.uint8(r % 8)):
        return encode_neurons(buf, shape, None, zstd, beat)  # a padding bit is set: every bit is real
    table: bytes = zstd.encode(q)
    size = _LAYOUT.size + len(table) + 5 + coded
    if beat is not None and size >= beat:
        return None
    out = np.empty(int(size * 1.01) + 64, dtype=np.uint8)
    used = encode_bits(buf, s, r, k, d, lag, m, q, out)
    if used < 0:  # (the estimate is within a fraction of a percent; never seen)
        out = np.empty(8 * n * PROB_BITS // 8 + 64, dtype=np.uint8)
        used = encode_bits(buf, s, r, k, d, lag, m, q, out)
    return _LAYOUT.pack(s, r, k, d, lag, m, len(table)) + table + out[:used].tobytes()


def _numba_installed() -> bool:
    """Whether numba is there to load (a reader-only install has none: decode in plain Python, without the
    warning that loading the kernels gives a writer)."""
    return importlib.util.find_spec("numba") is not None


def decode_neurons(body: memoryview, n: int, dest: np.ndarray) -> None:
    """Decode a mode 4 payload into ``dest`` (``n`` bytes), refusing damage as docs/format.md §6.1 lists."""
    if len(body) < _LAYOUT.size:
        raise ChecksumError("spike chunk is truncated (no neuron layout)")
    s, r, k, d, lag, m, z = _LAYOUT.unpack_from(body)
    if not (s >= 1 and k >= 1 and d >= 1 and lag >= 1 and (r + 7) // 8 == s and k % d == 0 and n % (s * k) == 0
            and 4 * (k // d) * r <= n and m <= n // (s * k)):
        raise ChecksumError(f"spike chunk is damaged (neuron layout S={s} R={r} K={k} D={d} L={lag} M={m} "
                            f"for {n} bytes)")
    rest = body[_LAYOUT.size:]
    if z > len(rest):
        raise ChecksumError(f"spike chunk is truncated ({z} bytes of probabilities, {len(rest)} there)")
    q = zstd_into(rest[:z], np.empty(2 * (k // d) * r, dtype="<u2"), "spike chunk (neuron probabilities)")
    if q.max(initial=0) > _ONE:
        raise ChecksumError("spike chunk is damaged (a probability above 1)")
    coded = np.frombuffer(rest[z:], dtype=np.uint8)
    if coded.size < 5 or coded[0] != 0:
        raise ChecksumError("spike chunk is damaged (range-coded bits do not start with a zero byte)")
    dest[:] = 0
    if _numba_installed() and packing.kernels_ready():
        from spikestore.codecs._neuron_kernels import decode_bits

        used = int(decode_bits(coded, s, r, k, d, lag, m, q, dest))
    else:
        used = _decode_bits(coded, s, r, k, d, lag, m, q.tolist(), dest)
    if used != coded.size:
        raise ChecksumError(f"spike chunk is damaged (range coder read {used} of {coded.size} bytes)")


def _decode_bits(data: np.ndarray, s: int, r: int, k: int, d: int, lag: int, m: int, q: list[int],
                 dest: np.ndarray) -> int:
    """:func:`~spikestore.codecs._neuron_kernels.decode_bits` in plain Python (no numba): the same
    bits into the zeroed ``dest``; bytes of ``data`` read, or -1 if it ends early."""
    w = k // d * r
    raw = data.tobytes()
    code = int.from_bytes(raw[:5], "big") & _MASK32
    pos, rng = 5, _MASK32
    for t in range(m):
        for kk in range(k):
            base = (t * k + kk) * s
            prev = ((t - lag) * k + kk) * s
            for i in range(r):
                c = (int(dest[prev + (i >> 3)]) >> (i & 7)) & 1 if t >= lag else 0
                p1 = q[c * w + kk // d * r + i]
                if p1 == 0:
                    continue
                if p1 != _ONE:
                    bound = (rng >> PROB_BITS) * (_ONE - p1)
                    if code < bound:
                        rng = bound
                        p1 = 0
                    else:
                        code -= bound
                        rng -= bound
                    while rng < _TOP:
                        if pos >= len(raw):
                            return -1
                        rng <<= 8
                        code = ((code << 8) | raw[pos]) & _MASK32
                        pos += 1
                if p1:
                    dest[base + (i >> 3)] |= 1 << (i & 7)
    return pos
