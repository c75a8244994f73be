"""Some rows of a spike chunk, without decoding the rest: the cold random read.

Decoding a whole gap-coded spike chunk to read one record spends most of
its time not reading or decompressing but turning every gap into a bit
position (a running sum, which numpy does not vectorize) and setting and
packing every bit (``docs/performance.md`` has the figures). Only those two
steps depend on how much of the chunk is wanted, so this module does them
for the wanted rows alone, in the same chunk bytes: the format is the same,
and stores of every version are read this way.

How: the gaps are summed in blocks of :data:`BLOCK` (a vectorized
reduction, ~10x cheaper than the running sum), which gives the position of
the last spike of every block; the blocks that cover the wanted bits are
then expanded. A chunk is still checked as a whole (its checksum
and identity by the caller, its header, gap count, escapes and spike
positions by :func:`~spikestore.codecs._spikes_decode.gap_values`), so a
partial read refuses exactly the damage a whole decode refuses.

Bitmap and silent chunks (modes 0 and 3) are decoded whole: that is one
zstd call, already about as cheap as the wanted rows would be. So are
neuron-coded chunks (mode 4): a range coder cannot start in the middle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikestore._format.dtypes import BIT_ORDER
from spikestore.codecs._spikes_decode import _RowMap, decode_spikes, gap_values, parse_header
from spikestore.errors import InvalidArgumentError

__all__ = ["BLOCK", "decode_spike_rows"]

#: Gaps summed together to find where the wanted rows start (one cumsum of
#: this many gaps is ~10 us; a block then spans ~160 records at 10% firing).
BLOCK = 4096


def decode_spike_rows(data: Any, lo: int, hi: int, row_bytes: int,
                      expected: int) -> tuple[np.ndarray, bool]:
    """Rows ``lo:hi`` (of ``row_bytes`` packed bytes each) of an encoded spike chunk.

    Parameters
    ----------
    data
        One encoded chunk, as :func:`~spikestore.codecs._spikes_decode.decode_spikes` takes it.
    lo, hi
        The wanted rows, ``0 <= lo <= hi``, ``hi * row_bytes <= expected``.
    row_bytes
        Bytes of one stored row (a record); a multiple of the packed row
        length when the codec's ``row_bits`` is not a multiple of 8.
    expected
        Decoded bytes of the whole chunk (refused before anything is allocated otherwise).

    Returns
    -------
    (bytes, whole)
        ``whole`` False: ``bytes`` holds rows ``lo:hi`` alone. ``whole``
        True: the chunk was decoded whole anyway (bitmap, silent or neuron-coded chunks),
        and ``bytes`` is all of it, for the caller to keep.

    Raises
    ------
    ChecksumError, FormatError
        As :func:`~spikestore.codecs._spikes_decode.decode_spikes`, for any chunk it refuses.
    """
    mode, n, body = parse_header(data, expected)
    if mode in (0, 3, 4):
        return decode_spikes(data, expected=expected), True
    if not (0 <= lo <= hi and hi * row_bytes <= n):
        raise InvalidArgumentError(f"rows {lo}:{hi} of {row_bytes} bytes are not inside a chunk of {n} bytes; "
                                   "ask for rows of the chunk")
    gaps, rows = gap_values(body, mode, n)
    return _expand(gaps, rows, lo, hi, row_bytes), False


def _expand(gaps: np.ndarray, rows: _RowMap | None, lo: int, hi: int, row_bytes: int) -> np.ndarray:
    """The packed bytes of rows ``lo:hi`` of the chunk whose (checked) spike gaps are ``gaps``."""
    out_bits = np.zeros(8 * row_bytes * (hi - lo), dtype=np.bool_)
    # Gap coders number only the real bits of padded rows: a row of row_bytes
    # holds row_bytes * 8 // row_span packed rows of row_bits real bits each.
    per_row = 8 * row_bytes if rows is None else (8 * row_bytes // rows.row_span) * rows.row_bits
    b0, b1 = lo * per_row, hi * per_row  # the wanted bits, as the gaps number them
    if gaps.size and b1 > b0:
        starts = np.arange(0, gaps.size, BLOCK)
        # Position of the last spike of each block: every gap adds itself + 1.
        last = np.cumsum(np.add.reduceat(gaps, starts) + np.diff(starts, append=gaps.size)) - 1
        first_block = int(np.searchsorted(last, b0))  # the first block that reaches b0
        if first_block < last.size:
            end_block = int(np.searchsorted(last, b1 - 1)) + 1  # ... and the first that reaches b1 - 1
            base = int(last[first_block - 1]) if first_block else -1
            pos = base + np.cumsum(gaps[first_block * BLOCK:end_block * BLOCK] + 1)
            pos = pos[(pos >= b0) & (pos < b1)]
            pos = rows.to_physical(pos) - 8 * row_bytes * lo if rows is not None else pos - b0
            out_bits[pos] = True
    return np.packbits(out_bits, bitorder=BIT_ORDER)
