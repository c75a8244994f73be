"""Opt-in lossy storage of float records: ``precision="bf16"`` or ``"keepbits:N"``.

Voltages and gradients hardly compress losslessly (LIF membrane potentials
stay at ~86% of their float32 size). Where a few significant digits are
enough, a monitor or ``Store.append`` can ask for:

``"bf16"``
    round to bfloat16 (round to nearest even; 8 significant bits), stored as
    ``uint16``: 2 bytes a value before compression. Read back as the record's
    own dtype.
``"keepbits:N"``
    keep ``N`` mantissa bits (numcodecs' ``BitRound``), stored in the
    record's dtype with the dropped bits zeroed, which compresses well.

The choice is stored in each segment's ``precision`` field and is never
applied unless asked for. Binary (bit-packed) records are always exact.
"""

from __future__ import annotations

import re

import numpy as np

from spikestore._format import dtypes
from spikestore.errors import InvalidArgumentError, InvalidValueError

__all__ = ["apply_precision", "check_lossy", "check_precision", "restore_precision"]

_KEEPBITS = re.compile(r"^keepbits:(\d+)$")
_MANTISSA = {"float32": 23, "float64": 52}


def check_precision(precision: str | None) -> str | None:
    """Validate a precision argument; return it unchanged."""
    if precision is None or precision == "bf16":
        return precision
    m = _KEEPBITS.match(precision) if isinstance(precision, str) else None
    if m is None or not 0 <= int(m.group(1)) <= 52:
        raise InvalidArgumentError(
            f"precision must be None, 'bf16' or 'keepbits:N' with 0 <= N <= 52, not {precision!r}")
    return precision


def check_lossy(key: str, dtype: str, precision: str) -> str:
    """``precision`` checked for records of logical dtype ``dtype`` of stream ``key``.

    Raises
    ------
    InvalidValueError
        For a dtype outside :data:`~spikestore._format.dtypes.LOSSY_DTYPES`.
    InvalidArgumentError
        For an unknown precision.
    """
    if dtype not in dtypes.LOSSY_DTYPES:
        raise InvalidValueError(
            f"stream {key!r}: precision={precision!r} applies to float32/float64 records, "
            f"not {dtype}; drop the precision argument for this stream")
    return str(check_precision(precision))


def apply_precision(arr: np.ndarray, precision: str, key: str) -> np.ndarray:
    """The stored form of a raw float record under ``precision``."""
    check_lossy(key, arr.dtype.name, precision)
    if precision == "bf16":
        return dtypes.float32_to_bfloat16_bits(arr)
    keep = int(_KEEPBITS.match(precision).group(1))  # type: ignore[union-attr]
    if keep >= _MANTISSA[arr.dtype.name]:
        return arr
    from numcodecs import BitRound

    # BitRound hands back an integer view of the rounded floats; store them as floats.
    rounded: np.ndarray = BitRound(keepbits=keep).encode(np.ascontiguousarray(arr))
    return rounded.view(arr.dtype).reshape(arr.shape)


def restore_precision(rows: np.ndarray, precision: str | None, dtype: np.dtype) -> np.ndarray:
    """Turn stored rows back into values of the record's ``dtype``."""
    if precision == "bf16":
        return dtypes.bfloat16_bits_to_float(rows, dtype)
    if rows.dtype != dtype and rows.dtype.itemsize == dtype.itemsize:
        # Earlier versions stored keepbits rows as BitRound's integer view of the floats: same bits.
        return rows.view(dtype)
    return rows
