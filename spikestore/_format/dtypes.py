"""Logical dtypes of records, and the one dtype numpy lacks: bfloat16.

A record keeps its logical dtype name (``"float32"``, ``"bool"``,
``"bfloat16"``...) in its segment's document. numpy has no bfloat16, so the
format stores bfloat16 values as their ``uint16`` bit patterns, readers see
them as ``ml_dtypes.bfloat16`` (a numpy extension dtype), torch gets its own
``torch.bfloat16`` back, and exporters, whose file formats have no bfloat16,
write float32 (exact: every bfloat16 is a float32). Every conversion lives
here, so no other module tests for the name.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from spikestore.errors import MissingDependencyError

__all__ = [
    "BFLOAT16",
    "BIT_ORDER",
    "LOSSY_DTYPES",
    "bfloat16_binary_mask",
    "bfloat16_bits_to_float",
    "export_dtype",
    "export_values",
    "float32_to_bfloat16_bits",
    "from_tensor",
    "numpy_dtype",
    "to_tensor",
    "unpacked_dtype",
]

BFLOAT16 = "bfloat16"
#: Bit order of a ``"bits"`` segment (docs/format.md §5): eight values of the last axis per byte, the
#: first in the least significant bit, as ``np.packbits(mask, axis=-1, bitorder=BIT_ORDER)`` packs them.
BIT_ORDER: Final = "little"
#: Logical dtypes a lossy ``precision`` (``bf16``, ``keepbits:N``) may apply to; every other
#: record is stored exactly.
LOSSY_DTYPES = frozenset({"float32", "float64"})
#: Bit pattern of bfloat16 1.0 (the top half of float32 1.0, 0x3F800000).
_BF16_ONE = np.uint16(0x3F80)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype that holds records of logical dtype ``name``."""
    if name == BFLOAT16:
        import ml_dtypes

        bf16: np.dtype = np.dtype(ml_dtypes.bfloat16)
        return bf16
    return np.dtype(name)


def unpacked_dtype(name: str) -> np.dtype:
    """The dtype bit-packed records are unpacked to before :func:`numpy_dtype` (bfloat16 goes via float32)."""
    return np.dtype(np.float32) if name == BFLOAT16 else np.dtype(name)


def export_dtype(name: str) -> np.dtype:
    """The dtype exporters write records of logical dtype ``name`` as (bfloat16 as float32)."""
    return np.dtype(np.float32) if name == BFLOAT16 else numpy_dtype(name)


def export_values(values: np.ndarray, name: str) -> np.ndarray:
    """Records as exporters write them (:func:`export_dtype`)."""
    return values.astype(np.float32) if name == BFLOAT16 else values


def from_tensor(t: Any) -> np.ndarray:
    """A CPU tensor's values as numpy, sharing its memory where numpy can (bfloat16 as ``uint16`` bits)."""
    import torch

    if t.dtype == torch.bfloat16:
        bits: np.ndarray = t.view(torch.int16).numpy().view(np.uint16)
        return bits
    if t.is_complex() and t.is_conj():
        t = t.resolve_conj()
    values: np.ndarray = t.numpy()
    return values


def to_tensor(values: np.ndarray, name: str) -> Any:
    """Records read back as a torch tensor of their logical dtype."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("records as torch tensors need torch: pip install 'spikestore[record]', "
                                     "or read them as numpy arrays (s[i])") from None

    arr = values if values.flags.c_contiguous and values.flags.writeable else values.copy()
    if name == BFLOAT16:
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


def bfloat16_binary_mask(values: np.ndarray) -> np.ndarray | None:
    """For bfloat16 bit patterns (``uint16``), ``values == 1`` when every value is 0 or 1, else ``None``.

    Other dtypes are checked by :class:`spikestore.codecs._packing.Packer`,
    which knows their bit patterns itself.
    """
    if values.ndim == 0 or values.size == 0:
        return None
    ones = values == _BF16_ONE
    if np.count_nonzero(values) != np.count_nonzero(ones):
        return None
    mask: np.ndarray = ones
    return mask


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """Round float values to bfloat16 (round to nearest even) and return the ``uint16`` bit patterns.

    NaN stays NaN (the quiet NaN ``0x7FC0``), which plain rounding of the bits would not guarantee.
    """
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    out = rounded.astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bfloat16_bits_to_float(bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Invert :func:`float32_to_bfloat16_bits` to values of ``dtype`` (exact)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(dtype, copy=False)
