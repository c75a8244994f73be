"""A spike codec decoder written from docs/format.md §6.1 alone, with numpy, zstd and pcodec.

It imports nothing of spikestore (``tests/test_format_spec_decoder.py``
checks this module's imports), so it shows that the page is enough to
reimplement the codec: every rule below cites the paragraph of §6.1 it
follows. zstd comes from numcodecs (the ``zstd`` package is not installed
here); any zstd library that decompresses into a buffer of a given size
would do.
"""

from __future__ import annotations

import struct

import numpy as np
from numcodecs.zstd import decompress as zstd_decompress
from pcodec import standalone

__all__ = ["SpikeChunkError", "decode_spike_chunk", "drop_identity_frame"]

#: §6.1 "The codec's input": the identity frame's first 12 bytes (magic, size 33, tag).
_FRAME_START = bytes.fromhex("5e2a4d18") + bytes.fromhex("21000000") + b"spkI"
_FRAME_BYTES = 41
#: §6.1 "Header": version, mode, decoded length.
_HEADER = struct.Struct("<BBQ")
_FLAG = 0x80
#: §3.1 and §6.1 "What a decoder checks": no chunk decodes to more.
_LIMIT = 2**31
_ZSTD_MAGIC = bytes.fromhex("28b52ffd")  # 0xFD2FB528, little-endian


class SpikeChunkError(ValueError):
    """A chunk that §6.1 says a decoder refuses."""


def drop_identity_frame(data: bytes) -> bytes:
    """``data`` without the 41-byte identity frame that may end it (§6.1 "The codec's input", §6)."""
    if len(data) >= _FRAME_BYTES and data[-_FRAME_BYTES:].startswith(_FRAME_START):
        return data[:-_FRAME_BYTES]
    return data


def decode_spike_chunk(data: bytes, expected: int | None = None) -> np.ndarray:
    """The ``n`` packed bytes (``uint8``) of one encoded spike chunk.

    ``expected`` is the chunk's size from the array's metadata (``chunk_records
    * prod(stored_shape)``); without it ``n`` is bounded by 2³¹ alone.
    """
    chunk = drop_identity_frame(bytes(data))
    if len(chunk) < _HEADER.size:
        raise SpikeChunkError("shorter than the 10-byte header")
    version, mode, n = _HEADER.unpack_from(chunk)
    if version not in (1, 2):
        raise SpikeChunkError(f"codec version {version}: a newer format")
    if mode not in (0, 1, 2, 3, 4, 0x81, 0x82) or (mode == 4) != (version == 2):
        raise SpikeChunkError(f"mode {mode:#x} in version {version}")
    if (expected is not None and n != expected) or n > _LIMIT:
        raise SpikeChunkError(f"n = {n}, expected {expected}")
    payload = chunk[_HEADER.size:]
    if mode == 0:
        return _zstd(payload, n)
    if mode == 3:
        if payload:
            raise SpikeChunkError("mode 3 with a payload")
        return np.zeros(n, dtype=np.uint8)
    if mode == 4:
        return _neuron_chunk(payload, n)
    return _gap_chunk(payload, mode, n)


def _neuron_chunk(payload: bytes, n: int) -> np.ndarray:
    """§6.1 "Mode 4, neurons": the layout, the probabilities, then the range-coded bits."""
    if len(payload) < 36:
        raise SpikeChunkError("no neuron layout")
    s, r, k, d, lag, m, z = struct.unpack_from("<IIIIIQQ", payload)
    if (0 in (s, k, d, lag) or -(-r // 8) != s or k % d or n % (k * s) or 4 * (k // d) * r > n
            or m > n // (k * s)):
        raise SpikeChunkError(f"neuron layout S={s} R={r} K={k} D={d} L={lag} M={m} for {n} bytes")
    w = k * r  # W neurons per model row
    p = k // d * r  # P probabilities per context
    if z > len(payload) - 36:
        raise SpikeChunkError("probability frame past the end")
    q = _zstd(payload[36:36 + z], 4 * p).view("<u2").astype(np.int64).tolist()
    if max(q, default=0) > 4096:
        raise SpikeChunkError("a probability above 1")
    coded = payload[36 + z:]
    if len(coded) < 5 or coded[0] != 0:
        raise SpikeChunkError("range-coded bits that do not start with a zero byte")
    rng, code, used = 0xFFFFFFFF, int.from_bytes(coded[:5], "big") & 0xFFFFFFFF, 5
    x = np.zeros((n // (k * s), w), dtype=np.uint8)  # x[t, j]: bit of neuron j in model row t
    for t in range(m):
        for j in range(w):
            c = x[t - lag, j] if t >= lag else 0
            p1 = q[c * p + (j // r) // d * r + j % r]  # neuron j = kk * R + i shares probability (kk // D) * R + i
            if p1 in (0, 4096):
                x[t, j] = p1 // 4096
                continue
            bound = (rng >> 12) * (4096 - p1)
            if code < bound:
                rng = bound
            else:
                x[t, j] = 1
                code -= bound
                rng -= bound
            while rng < 2**24:
                if used == len(coded):
                    raise SpikeChunkError("range-coded bits end early")
                rng <<= 8
                code = ((code << 8) | coded[used]) & 0xFFFFFFFF
                used += 1
    if used != len(coded):
        raise SpikeChunkError("bytes after the range-coded bits")
    # Neuron j = kk * R + i is bit i of packed row t * K + kk (bit 8 * S * (t * K + kk) + i); padding stays 0.
    rows = np.zeros((x.shape[0] * k, 8 * s), dtype=np.uint8)
    rows[:, :r] = x.reshape(-1, r)
    return np.packbits(rows, axis=-1, bitorder="little").reshape(-1)


def _gap_chunk(payload: bytes, mode: int, n: int) -> np.ndarray:
    """§6.1 "Gaps (modes 1 and 2)": the row length, the gaps, then the spikes' bits."""
    bits = 8 * n
    row = None
    if mode & _FLAG:
        if len(payload) < 4:
            raise SpikeChunkError("no row length")
        (r,) = struct.unpack_from("<I", payload)
        span = 8 * -(-r // 8)  # S = 8 * ceil(R / 8)
        if r % 8 == 0 or n % (span // 8):
            raise SpikeChunkError(f"row length {r} for {n} bytes")
        row = (r, span)
        bits = (8 * n // span) * r  # N
        payload = payload[4:]
    # Mode 1's escapes and mode 2's numbers: 4 bytes while 8n < 2**32, else 8.
    width = 4 if 8 * n < 2**32 else 8
    gaps = _gaps8(payload, bits, width) if mode & ~_FLAG == 1 else _gaps_pcodec(payload, bits, width)
    if float(gaps.sum(dtype=np.float64)) + gaps.size > bits:
        raise SpikeChunkError("a spike past the chunk")
    positions = np.cumsum(gaps + 1) - 1
    if row is not None:
        r, span = row
        positions = (positions // r) * span + positions % r
    flat = np.zeros(8 * n, dtype=np.uint8)
    flat[positions] = 1
    return np.packbits(flat, bitorder="little")


def _gaps8(payload: bytes, bits: int, width: int) -> np.ndarray:
    """§6.1 "Mode 1, gaps8": ``k``, ``z``, the gap bytes, then the escapes of the bytes 255."""
    if len(payload) < 16:
        raise SpikeChunkError("no gap header")
    k, z = struct.unpack_from("<QQ", payload)
    if k > bits:
        raise SpikeChunkError(f"{k} gaps in {bits} positions")
    rest = payload[16:]
    if z > len(rest):
        raise SpikeChunkError("gap frame past the end")
    small = _zstd(rest[:z], k)
    tail = rest[z:]
    escaped = small == 255
    gaps = small.astype(np.int64)
    e = int(escaped.sum())
    if not e:
        if tail:
            raise SpikeChunkError("bytes after the gaps")
        return gaps
    escapes = _zstd(tail, e * width).view(f"<u{width}")
    if escapes.max() >= bits:
        raise SpikeChunkError("an escape past the chunk")
    gaps[escaped] += escapes.astype(np.int64)
    return gaps


def _gaps_pcodec(payload: bytes, bits: int, width: int) -> np.ndarray:
    """§6.1 "Mode 2, gaps-pcodec": a pcodec standalone file of at most ``N`` numbers of ``width`` bytes."""
    dtype = np.dtype(f"uint{8 * width}")
    out = np.empty(bits + 1, dtype=dtype)  # one more than allowed: a full buffer is refused
    try:
        progress = standalone.simple_decompress_into(payload, out)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise SpikeChunkError(f"pcodec refuses it ({exc})") from None
    if not progress.finished or progress.n_processed > bits:
        raise SpikeChunkError("more gaps than positions")
    gaps = out[:progress.n_processed]
    if gaps.size and gaps.max() >= bits:
        raise SpikeChunkError("a gap past the chunk")
    return gaps.astype(np.int64)


def _zstd(frame: bytes, size: int) -> np.ndarray:
    """One zstd frame that declares content size ``size`` (RFC 8878 §3.1.1), decoded into ``size`` bytes."""
    if _content_size(frame) != size:
        raise SpikeChunkError(f"a zstd frame that does not declare {size} bytes")
    out = np.empty(size, dtype=np.uint8)
    if size:
        try:
            zstd_decompress(frame, out)
        except (RuntimeError, ValueError) as exc:
            raise SpikeChunkError(f"zstd refuses it ({exc})") from None
    return out


def _content_size(frame: bytes) -> int | None:
    """The frame content size of a zstd frame header, ``None`` when it has none."""
    if len(frame) < 5 or frame[:4] != _ZSTD_MAGIC:
        return None
    descriptor = frame[4]
    single = descriptor >> 5 & 1
    size_bytes = (single, 2, 4, 8)[descriptor >> 6]
    if not size_bytes:
        return None
    at = 5 + (1 - single) + (0, 1, 2, 4)[descriptor & 3]
    if len(frame) < at + size_bytes:
        return None
    size = int.from_bytes(frame[at:at + size_bytes], "little")
    return size + 256 if size_bytes == 2 else size
