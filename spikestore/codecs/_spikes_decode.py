"""The spike codec's decoder; docs/format.md §6.1 specifies the bytes it reads.

The encoder is :mod:`spikestore.codecs._spikes`. The decoder trusts
nothing in a chunk: the decoded length must be the one the caller expects
(or at most :data:`~spikestore.codecs._bounded.MAX_DECODED_BYTES` when none
is), checked before anything is allocated; zstd payloads are
inflated into buffers of exactly their expected size; gap counts are bounded
by the bits of the chunk, escapes by the escaped gaps, pcodec output by the
bits too; every spike must land inside the chunk. Whatever fails is a
:class:`~spikestore.errors.ChecksumError` (a newer codec version, a
:class:`~spikestore.errors.FormatError`). A trailing chunk identity frame
(:mod:`spikestore.codecs._identity`), which plain zarr hands over with the
chunk, is skipped.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from numcodecs.compat import ensure_contiguous_ndarray

from spikestore._format.dtypes import BIT_ORDER
from spikestore.codecs._bounded import check_size, pcodec_values, zstd_into
from spikestore.codecs._identity import split_frame
from spikestore.codecs._neurons import decode_neurons
from spikestore.errors import ChecksumError, FormatError

__all__ = ["decode_spikes", "gap_values", "parse_header"]

_VERSION = 1
#: The codec version of neuron-coded chunks (mode 4): spikestores that read only version 1 ask for an upgrade
#: instead of calling the chunk damaged.
_NEURONS_VERSION = 2
_HEADER = struct.Struct("<BBQ")
_ROWS = struct.Struct("<I")
_ROW_FLAG = 0x80  # mode bit: gaps count only the real bits of padded rows
_GAPS8 = struct.Struct("<QQ")


def _pcodec_dtype(nbits: int) -> type:
    return np.uint32 if nbits < 2**32 else np.uint64


def _escape_dtype(n: int) -> str:
    return "<u4" if 8 * n < 2**32 else "<u8"


class _RowMap:
    """Bit numbering without the zero padding at the end of each packed row."""

    def __init__(self, row_bits: int, n: int) -> None:
        self.row_bits = row_bits
        self.row_span = 8 * ((row_bits + 7) // 8)  # bits a row occupies, padding included
        self.logical_bits = (8 * n // self.row_span) * row_bits

    @classmethod
    def make(cls, row_bits: int | None, n: int) -> _RowMap | None:
        """A map when rows are padded and the buffer holds whole rows
        (whether the padding is all zero is checked while coding the gaps)."""
        if not row_bits or row_bits % 8 == 0 or (8 * n) % (8 * ((row_bits + 7) // 8)):
            return None
        return cls(row_bits, n)

    def to_logical(self, positions: np.ndarray) -> np.ndarray:
        row, bit = np.divmod(positions, self.row_span)
        return row * self.row_bits + bit

    def to_physical(self, positions: np.ndarray) -> np.ndarray:
        row, bit = np.divmod(positions, self.row_bits)
        return row * self.row_span + bit


def decode_spikes(data: Any, out: Any = None, expected: int | None = None) -> np.ndarray:
    """Decode :func:`~spikestore.codecs._spikes.encode_spikes` output to packed ``uint8`` bytes.

    Parameters
    ----------
    data
        One encoded chunk (a trailing identity frame is skipped).
    out
        Where to decode to; its size in bytes is then the expected length.
    expected
        The decoded length in bytes, when known without ``out``.

    Raises
    ------
    ChecksumError
        For a damaged chunk, among them one whose header declares another
        length than expected (or over 2 GiB), before anything is allocated.
    FormatError
        For a chunk of a newer codec version.
    """
    dest = None if out is None else ensure_contiguous_ndarray(out).view(np.uint8).reshape(-1)
    mode, n, body = parse_header(data, expected if dest is None else dest.size)
    if dest is None:
        dest = np.empty(n, dtype=np.uint8)
    if mode == 0:
        zstd_into(body, dest, "spike chunk (bitmap)")
    elif mode == 3:
        if len(body):
            raise ChecksumError(f"spike chunk without spikes has {len(body)} bytes of payload")
        dest[:] = 0
    elif mode == 4:
        decode_neurons(body, n, dest)
    else:
        _decode_gaps(body, mode, n, dest)
    return out if out is not None else dest


def parse_header(data: Any, expected: int | None) -> tuple[int, int, memoryview]:
    """``(mode, decoded bytes, payload)`` of a spike chunk, checked against ``expected`` bytes.

    A trailing identity frame is dropped first; see :func:`decode_spikes`
    for what is refused.
    """
    raw, _ = split_frame(ensure_contiguous_ndarray(data).view(np.uint8).reshape(-1))
    if len(raw) < _HEADER.size:
        raise ChecksumError("spike chunk is truncated (no header)")
    version, mode, n = _HEADER.unpack_from(raw)
    if version not in (_VERSION, _NEURONS_VERSION):
        raise FormatError(f"spike chunk has codec version {version}; this spikestore reads {_VERSION} and "
                          f"{_NEURONS_VERSION}: upgrade it")
    check_size(n, expected, "spike chunk")
    if (mode == 4) != (version == _NEURONS_VERSION) or (mode & ~_ROW_FLAG not in (1, 2) and mode not in (0, 3, 4)):
        raise ChecksumError(f"spike chunk has unknown mode {mode} (codec version {version})")
    return mode, n, raw[_HEADER.size:]


def _decode_gaps(body: memoryview, mode: int, n: int, dest: np.ndarray) -> None:
    """Decode a gap-coded payload (modes 1 and 2, with or without the row flag) into ``dest``."""
    gaps, rows = gap_values(body, mode, n)
    positions = np.cumsum(gaps + 1) - 1
    if rows is not None:
        positions = rows.to_physical(positions)
    flat = np.zeros(8 * n, dtype=np.bool_)  # (bit by bit is 2-4x faster than OR-ing bytes together)
    flat[positions] = True
    dest[:] = np.packbits(flat, bitorder=BIT_ORDER)


def gap_values(body: memoryview, mode: int, n: int) -> tuple[np.ndarray, _RowMap | None]:
    """The checked gaps (``int64``) of a gap-coded payload, and its row map (``None``: every bit counts).

    Shared by the whole-chunk decoder and the one that decodes only some
    rows (:mod:`spikestore.codecs._spike_rows`), so both refuse the same
    damage: every spike lies inside the chunk's (real) bits.
    """
    rows = None
    if mode & _ROW_FLAG:
        if len(body) < _ROWS.size:
            raise ChecksumError("spike chunk is truncated (no row length)")
        (row_bits,) = _ROWS.unpack_from(body)
        if row_bits % 8 == 0 or (8 * n) % (8 * ((row_bits + 7) // 8)):
            raise ChecksumError(f"spike chunk is damaged (bad row length {row_bits} for {n} bytes)")
        rows = _RowMap(row_bits, n)
        body = body[_ROWS.size:]
    bits = rows.logical_bits if rows is not None else 8 * n
    if mode & ~_ROW_FLAG == 1:
        gaps = _gaps8(body, bits, n)
    else:
        gaps = pcodec_values(body, _pcodec_dtype(8 * n), bits, "spike chunk (pcodec gaps)")
        if gaps.size and gaps.max() >= bits:
            raise ChecksumError("spike chunk is damaged (spike position out of range)")
        gaps = gaps.astype(np.int64)
    # Every gap is below ``bits`` + 255 and there are at most ``bits`` of them,
    # so the float sum is exact wherever the spikes fit (< 2**53), and once it
    # fits the cumulative sum below cannot overflow.
    if gaps.sum(dtype=np.float64) + gaps.size > bits:
        raise ChecksumError("spike chunk is damaged (spike position out of range)")
    return gaps, rows


def _gaps8(body: memoryview, bits: int, n: int) -> np.ndarray:
    """The gaps of a mode 1 payload: bytes (255 = escape) + zstd, escapes + zstd."""
    if len(body) < _GAPS8.size:
        raise ChecksumError("spike chunk is truncated (no gap header)")
    n_gaps, zlen = _GAPS8.unpack_from(body)
    if n_gaps > bits:
        raise ChecksumError(f"spike chunk is damaged ({n_gaps} gaps in {bits} bits)")
    rest = body[_GAPS8.size:]
    if zlen > len(rest):
        raise ChecksumError(f"spike chunk is truncated ({zlen} bytes of gaps, {len(rest)} there)")
    small = zstd_into(rest[:zlen], np.empty(n_gaps, np.uint8), "spike chunk (gaps)")
    tail = rest[zlen:]
    escaped = small == 255
    n_escapes = int(np.count_nonzero(escaped))
    gaps = small.astype(np.int64)
    if n_escapes:
        escapes = zstd_into(tail, np.empty(n_escapes, _escape_dtype(n)), "spike chunk (escapes)")
        if escapes.max() >= bits:
            raise ChecksumError("spike chunk is damaged (spike position out of range)")
        gaps[escaped] += escapes.astype(np.int64)
    elif len(tail):
        raise ChecksumError(f"spike chunk has {len(tail)} bytes after its gaps")
    return gaps  # (their sum is checked by the caller)
