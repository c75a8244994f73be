"""The spike codec: packed spike bitmaps compressed close to the Shannon bound.

Bit-packing + zstd is within 2% of the entropy of i.i.d. spikes at 20% firing,
but 1.3-1.9x above it at 0.2-5%, where most SNNs live. Coding the *gaps*
between spikes does better there. This codec takes a chunk of packed bits
(``uint8``, little bit order, as the writer stores them) and picks, per
chunk, the smallest of:

======  ===============  ===================================================
mode    name             payload
======  ===============  ===================================================
0       ``bitmap``       zstd of the packed bytes (dense chunks)
1       ``gaps8``        gaps as bytes (255 = escape) + zstd, escapes + zstd
                         (medium sparsity; fast)
2       ``gaps-pcodec``  gaps compressed by pcodec (very sparse chunks;
                         pcodec's entropy coding reaches the bound)
3       ``zeros``        nothing: a chunk without a single spike
4       ``neurons``      each bit range-coded with its neuron's own spike
                         probability given the neuron's previous time step
                         (real layers: :mod:`spikestore.codecs._neurons`)
======  ===============  ===================================================

docs/format.md §6.1 specifies the encoded bytes (header, gaps, escapes,
the row flag ``0x80``, pcodec's integer width, what a decoder refuses);
this module is the encoder, and :mod:`spikestore.codecs._spikes_decode`
the decoder.

Registered as ``spikestore.spikes`` for numcodecs (``numcodecs.get_codec``)
and zarr v3 (``zarr.codecs`` entry point), so plain zarr decodes spike chunks
once spikestore is installed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray
from numcodecs.zstd import Zstd

from spikestore._format.dtypes import BIT_ORDER
from spikestore.codecs import _packing as packing
from spikestore.codecs._neurons import encode_neurons
from spikestore.codecs._spikes_decode import (
    _GAPS8,
    _HEADER,
    _NEURONS_VERSION,
    _ROW_FLAG,
    _ROWS,
    _VERSION,
    _escape_dtype,
    _pcodec_dtype,
    _RowMap,
    decode_spikes,
)
from spikestore.errors import InPlaceModificationError

__all__ = ["CODEC_ID", "NEURONS_FROM_LEVEL", "SpikeCodec", "decode_spikes", "encode_spikes"]

CODEC_ID = "spikestore.spikes"
MODES = ("bitmap", "gaps8", "gaps-pcodec", "zeros", "neurons")

# Density bands (fraction of ones) in which each mode is tried; overlapping
# bands try both and keep the smaller result. pcodec costs 5-10x the time of
# gaps8 and is smaller by only 0.5-1.5% above 1.2% density, while below 1%
# gaps8's escapes make it 5-13% larger: the two bands meet at 1.2%. Near 20%
# gaps8 is at most 0.1% smaller than the bitmap but decodes 20x slower.
_BITMAP_ABOVE = 0.12
_GAPS8_BAND = (0.012, 0.15)
_PCODEC_BELOW = 0.012
# Chunks of at most this many bytes try every mode (and both bit numberings).
_TRY_ALL_BELOW = 1024
# The neurons mode codes ~5 ns a bit, 5-10x the time of the others: it is
# tried only from this compression level up (the writer's default, 1, keeps
# the write path as fast as reading its input allows), and kept only when it
# is at least _NEURONS_GAIN smaller than the best of the others (never on
# i.i.d. spikes, which they code within 1-2% of the bound).
NEURONS_FROM_LEVEL = 2
_NEURONS_GAIN = 0.02


def spike_positions(packed: np.ndarray) -> np.ndarray:
    """Bit numbers of the ones in a packed (little bit order) byte array."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1)
    # nonzero() has a fast path for bool; unpacking first is cheaper than
    # expanding the non-zero bytes through a lookup table.
    return np.flatnonzero(np.unpackbits(packed, bitorder=BIT_ORDER).view(np.bool_))


def _gaps(positions: np.ndarray) -> np.ndarray:
    gaps = np.diff(positions, prepend=-1)
    gaps -= 1
    return gaps


def _encode_gaps8(small: np.ndarray, escapes: np.ndarray, n: int, zstd: Zstd) -> bytes:
    escapes = escapes.astype(_escape_dtype(n))
    zg: bytes = zstd.encode(small)
    tail: bytes = zstd.encode(escapes) if escapes.size else b""
    return _GAPS8.pack(small.size, len(zg)) + zg + tail


def _encode_pcodec(gaps: np.ndarray, n: int) -> bytes:
    from pcodec import ChunkConfig, standalone

    encoded: bytes = standalone.simple_compress(gaps.astype(_pcodec_dtype(8 * n)), ChunkConfig())
    return encoded


def encode_spikes(packed: Any, level: int = 1, row_bits: int | None = None) -> bytes:
    """Encode a packed spike buffer (any shape, read as flat bytes).

    Each mode is tried only in the density band where it can win; where
    bands overlap, the smaller encoding is kept. From ``level``
    :data:`NEURONS_FROM_LEVEL` up, a ``packed`` array of shape
    ``(records, ..., row bytes)`` (a chunk as the writer holds it) may also
    be coded neuron by neuron (mode 4), when that is clearly smaller; a flat
    buffer never is.

    ``row_bits`` is the length of the axis the bits were packed along. When
    it is not a multiple of 8, every row ends in padding bits that are
    always zero (28 spikes use 32 bits); the gap coders then number only
    the real bits, so padding costs nothing (a 10-neuron layer would
    otherwise pay for 16).
    """
    shape = tuple(packed.shape) if isinstance(packed, np.ndarray) and packed.dtype == np.uint8 else ()
    buf = ensure_contiguous_ndarray(packed).view(np.uint8).reshape(-1)
    n = buf.size
    ones = _count_ones(buf)
    if ones == 0:
        return _HEADER.pack(_VERSION, 3, n)
    zstd = Zstd(level=level)
    rows = _RowMap.make(row_bits, n)
    candidates: list[tuple[int, bytes]]
    if n <= _TRY_ALL_BELOW:  # small chunks: framing overheads rule, so try every mode
        candidates = [(0, zstd.encode(buf))]
        for numbering in {rows, None}:
            candidates += _gap_modes(buf, numbering, ones, zstd, gaps8=True, pcodec=True)
    else:
        # The bitmap codes the stored bytes, the gap coders only the real bits
        # of padded rows: each is picked by the density of what it codes.
        stored = ones / (8 * n)
        real = ones / rows.logical_bits if rows is not None else stored
        candidates = []
        if stored > _BITMAP_ABOVE or real > _GAPS8_BAND[1]:
            candidates.append((0, zstd.encode(buf)))
        if stored <= _GAPS8_BAND[1]:  # (heavily padded rows can be dense and still code well as gaps)
            candidates += _gap_modes(buf, rows, ones, zstd, gaps8=real >= _GAPS8_BAND[0],
                                     pcodec=real < _PCODEC_BELOW)
    mode, payload = min(candidates, key=lambda c: len(c[1]))
    if level >= NEURONS_FROM_LEVEL and len(shape) >= 2 and n > _TRY_ALL_BELOW:
        beat = int(len(payload) * (1 - _NEURONS_GAIN))
        neurons = encode_neurons(buf, shape, row_bits, zstd, beat)
        if neurons is not None and len(neurons) < beat:
            mode, payload = 4, neurons
    return _HEADER.pack(_NEURONS_VERSION if mode == 4 else _VERSION, mode, n) + payload


def _gap_modes(buf: np.ndarray, rows: _RowMap | None, ones: int, zstd: Zstd, *, gaps8: bool,
               pcodec: bool) -> list[tuple[int, bytes]]:
    """The gap-coded candidates ``(mode, payload)`` of a chunk with ``ones`` spikes."""
    gaps = _gap_bytes(buf, rows, ones)
    if gaps is None:  # a padding bit is set: not ours to drop, number every bit
        rows = None
        gaps = _gap_bytes(buf, rows, ones)
        assert gaps is not None
    small, escapes = gaps
    prefix = b"" if rows is None else _ROWS.pack(rows.row_bits)
    flag = 0 if rows is None else _ROW_FLAG
    out = []
    if gaps8:
        out.append((1 | flag, prefix + _encode_gaps8(small, escapes, buf.size, zstd)))
    if pcodec:
        full = small.astype(np.int64)
        full[small == 255] += escapes
        out.append((2 | flag, prefix + _encode_pcodec(full, buf.size)))
    return out


def _count_ones(buf: np.ndarray) -> int:
    if not buf.size:
        return 0
    if packing.kernels_ready():
        from spikestore.codecs._kernels import popcount

        return int(popcount(buf))
    return int(np.bitwise_count(buf).sum(dtype=np.int64))


def _gap_bytes(buf: np.ndarray, rows: _RowMap | None,
               ones: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The gaps of ``buf``'s spikes as ``(min(gap, 255) bytes, gap - 255 of each gap >= 255)``.

    Gaps count the real bits of ``rows`` only; ``None`` when a spike sits
    in a row's padding (the caller then numbers every bit).
    """
    if packing.kernels_ready():
        from spikestore.codecs._gap_kernels import gaps8

        small = np.empty(ones, dtype=np.uint8)
        escapes = np.empty(ones, dtype=np.int64)
        span = rows.row_span if rows is not None else 8
        k, e = gaps8(buf, span, rows.row_bits if rows is not None else 8, small, escapes)
        if k < 0:
            return None
        if k != ones:  # cannot happen unless the buffer changed under us
            raise InPlaceModificationError("the spike count of a chunk changed while it was being encoded")
        return small, escapes[:e]
    positions = spike_positions(buf)
    if rows is not None:
        last = buf.reshape(-1, rows.row_span // 8)[:, -1]
        if np.any(last >> np.uint8(rows.row_bits % 8)):
            return None
        positions = rows.to_logical(positions)
    gaps = _gaps(positions)
    return np.minimum(gaps, 255).astype(np.uint8), gaps[gaps >= 255] - 255


class SpikeCodec(Codec):  # type: ignore[misc]  # numcodecs ships no types: Codec is Any
    """numcodecs codec ``spikestore.spikes`` for packed spike chunks.

    Parameters
    ----------
    level
        zstd level used by the bitmap and gaps8 modes.
    """

    codec_id = CODEC_ID

    def __init__(self, level: int = 1, row_bits: int | None = None) -> None:
        self.level = int(level)
        self.row_bits = None if row_bits is None else int(row_bits)

    def encode(self, buf: Any) -> bytes:
        return encode_spikes(buf, self.level, self.row_bits)

    def decode(self, buf: Any, out: Any = None) -> Any:
        return decode_spikes(buf, out)

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"id": self.codec_id, "level": self.level}
        if self.row_bits is not None:
            cfg["row_bits"] = self.row_bits
        return cfg

    def __repr__(self) -> str:
        rows = "" if self.row_bits is None else f", row_bits={self.row_bits}"
        return f"SpikeCodec(level={self.level}{rows})"


def _zarr_codec_class() -> type:
    """The zarr v3 bytes-to-bytes codec, built lazily (zarr is imported late)."""
    from dataclasses import dataclass

    from zarr.abc.codec import BytesBytesCodec
    from zarr.core.common import parse_named_configuration

    @dataclass(frozen=True)
    class SpikeZarrCodec(BytesBytesCodec):
        """zarr v3 codec ``spikestore.spikes`` (see :mod:`spikestore.codecs._spikes`)."""

        is_fixed_size = False
        level: int = 1
        row_bits: int | None = None

        @classmethod
        def from_dict(cls, data: dict[str, Any]) -> SpikeZarrCodec:
            _, config = parse_named_configuration(data, CODEC_ID, require_configuration=False)
            options: dict[str, Any] = dict(config or {})
            return cls(**options)

        def to_dict(self) -> dict[str, Any]:
            cfg: dict[str, Any] = {"level": self.level}
            if self.row_bits is not None:
                cfg["row_bits"] = self.row_bits
            return {"name": CODEC_ID, "configuration": cfg}

        async def _decode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
            # The array's metadata says how many bytes the chunk decodes to: refuse any other length.
            try:
                expected = math.prod(chunk_spec.shape) * chunk_spec.dtype.to_native_dtype().itemsize
            except (AttributeError, TypeError):  # another zarr's chunk spec: bounded by the header alone
                expected = None
            decoded = decode_spikes(chunk_bytes.as_numpy_array(), expected=expected)
            return chunk_spec.prototype.buffer.from_array_like(decoded)

        async def _encode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
            enc = encode_spikes(chunk_bytes.as_numpy_array(), self.level, self.row_bits)
            return chunk_spec.prototype.buffer.from_bytes(enc)

        def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
            raise NotImplementedError

    SpikeZarrCodec.__module__ = __name__
    return SpikeZarrCodec


def __getattr__(name: str) -> Any:
    # `SpikeZarrCodec` is what the zarr.codecs entry point names.
    if name == "SpikeZarrCodec":
        cls = _zarr_codec_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
