"""Bit packing of binary records, for numpy (writer thread) and torch (capture).

One bit order everywhere (:data:`~spikestore._format.dtypes.BIT_ORDER`):
records are packed along their **last axis**, eight values per byte, first
value in the least significant bit. This is
``np.packbits(mask, axis=-1, bitorder="little")``, so any numpy user can undo
it with ``np.unpackbits(packed, axis=-1, count=n, bitorder="little")``.

A record is packed only when the round trip is bit-exact: every value must be
exactly ``0`` or ``1`` of its dtype (``-0.0`` and ``NaN`` are not).
"""

from __future__ import annotations

import math
import sys
import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np

from spikestore._format.dtypes import BIT_ORDER

if TYPE_CHECKING:
    import torch

__all__ = ["KERNELS", "Packer", "kernels_ready", "load_kernels", "pack_float32", "pack_if_binary",
           "pack_torch", "pack_torch_flagged", "packed_length", "packed_nbytes", "unpack_bits"]

# Multiplying a uint64 that holds eight 0/1 bytes by this constant gathers the
# eight bits, little bit order, into the top byte of the product.
_GATHER = np.uint64(0x0102040810204080)
_SHIFT = np.uint64(56)
_GATHER_INT = int(_GATHER.astype(np.int64))  # (torch has no uint64 multiply)
# Quick rejection of obviously non-binary records (voltages, gradients)
# before the full passes.
_SAMPLE = 256
#: Whether the compiled kernels of :mod:`spikestore.codecs._kernels` may be used:
#: they read words in native byte order. Elsewhere numpy does their work.
KERNELS = sys.byteorder == "little"
_kernel_state = "unloaded"  # then "ready", or "failed" (numpy does the work for good)
_kernel_lock = threading.Lock()


def kernels_ready() -> bool:
    """Whether the compiled kernels may be used; the first call loads them (:func:`load_kernels`)."""
    if not KERNELS:
        return False
    if _kernel_state == "unloaded":
        return load_kernels()
    return _kernel_state == "ready"


def load_kernels() -> bool:
    """Load the compiled kernels now, once per process (thread-safe).

    Loading takes ~1 s from numba's cache, and ~15 s of compiling the
    first time spikestore runs on a machine. Left to the first record, that
    stalled the training loop inside a forward hook at every start;
    :class:`~spikestore.Store` calls this when it opens instead, with the
    rest of the set-up. (Loading on a background thread was tried: records
    taking the numpy path meanwhile filled the queue, lost their in-place
    safety, and a ``fork`` during the load could hang the child.)

    Returns
    -------
    bool
        Whether the kernels are ready. If loading fails (a broken numba
        install), a ``RuntimeWarning`` says so once, and numpy packs and
        codes spikes from then on: the same bytes, ~7x the CPU time.
    """
    global _kernel_state
    if not KERNELS:
        return False
    with _kernel_lock:
        if _kernel_state == "unloaded":
            try:
                from spikestore.codecs._kernels import warm_up

                warm_up()
                _kernel_state = "ready"
            except Exception as exc:  # noqa: BLE001 - any failure leaves the numpy path, which is correct
                _kernel_state = "failed"
                fix = ("pip install 'spikestore[record]' installs it" if isinstance(exc, ModuleNotFoundError)
                       else "if numba is broken, reinstalling it fixes this")
                warnings.warn(f"spikestore could not load its compiled kernels ({exc!r}); numpy packs and "
                              f"codes spikes instead (the same bytes, ~7x the CPU time): {fix}.",
                              RuntimeWarning, stacklevel=2)
    return _kernel_state == "ready"


def packed_length(n: int) -> int:
    """Bytes needed to pack ``n`` values."""
    return (n + 7) // 8


def packed_nbytes(shape: tuple[int, ...]) -> int:
    """Bytes of a record of ``shape`` packed along its last axis."""
    return math.prod(shape[:-1]) * packed_length(shape[-1])  # (np.prod costs 10 us a call)


def pack_float32(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray | None:
    """Check and pack a C-contiguous float32 record in one compiled pass (needs :func:`kernels_ready`).

    ``out`` is ``uint8`` with room for ``packed_nbytes(x.shape) + 8`` bytes
    (the kernel's last 8 are scratch), or ``None`` for a new buffer; the
    result is a view of it, or ``None`` when ``x`` is not binary.
    """
    from spikestore.codecs._kernels import pack_f32

    if out is None:
        out = np.empty(packed_nbytes(x.shape) + 8, dtype=np.uint8)
    n = x.shape[-1]
    if not pack_f32(x.reshape(-1).view(np.uint32), n, out):
        return None
    return out[: packed_nbytes(x.shape)].reshape((*x.shape[:-1], packed_length(n)))


def _uint_view(x: np.ndarray) -> np.ndarray | None:
    """View a float array as unsigned ints of the same width (bit-exact checks)."""
    if x.dtype.kind == "f" and x.dtype.itemsize in (2, 4, 8):
        return x.view(f"<u{x.dtype.itemsize}")
    return None


def _mask_into(x: np.ndarray, out: np.ndarray) -> bool:
    """Write ``x == 1`` into ``out``; return whether every value was 0 or 1."""
    if x.dtype == np.bool_:
        out[...] = x
        return True
    if x.dtype.kind in "iu":
        np.equal(x, 1, out=out)
        return bool(np.count_nonzero(x) == np.count_nonzero(out))
    u = _uint_view(x)
    if u is None:  # complex, structured, bfloat16 handled as uint16 upstream...
        return False
    one = np.array(1, dtype=x.dtype).view(u.dtype)
    np.equal(u, one, out=out)
    return bool(np.count_nonzero(u) == np.count_nonzero(out))


class Packer:
    """Packs binary records, reusing its scratch buffers between calls.

    The writer thread owns one: fresh multi-megabyte buffers for every record
    would cost as much in page faults as the packing itself.
    """

    def __init__(self) -> None:
        self._mask = np.empty(0, dtype=np.bool_)
        self._words = np.empty(0, dtype=np.uint64)
        self._out = np.empty(0, dtype=np.uint8)

    def _scratch(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        size = int(np.prod(shape, dtype=np.int64))
        if self._mask.size < size:
            self._mask = np.empty(size, dtype=np.bool_)
            self._words = np.empty(size // 8, dtype=np.uint64)
        mask = self._mask[:size].reshape(shape)
        words = self._words[: size // 8].reshape((*shape[:-1], shape[-1] // 8))
        return mask, words

    def pack(self, x: np.ndarray) -> np.ndarray | None:
        """Pack ``x`` along its last axis if all its values are exactly 0 or 1.

        Parameters
        ----------
        x
            A record of at least one dimension (bool, int, uint or IEEE float).

        Returns
        -------
        numpy.ndarray or None
            A ``uint8`` array of shape ``x.shape[:-1] + (ceil(x.shape[-1] / 8),)``,
            or ``None`` when ``x`` is not binary (or is 0-d or empty), in which
            case the caller stores it raw. It may be this packer's scratch
            buffer, valid until the next call: the writer copies it into its
            chunk at once, and a copy here would cost a tenth of the packing.
        """
        if x.ndim == 0 or x.size == 0:
            return None
        x = np.ascontiguousarray(x)
        if x.dtype == np.float32 and kernels_ready():
            size = packed_nbytes(x.shape) + 8
            if self._out.size < size:
                self._out = np.empty(size, dtype=np.uint8)
            return pack_float32(x, self._out)
        if x.dtype != np.bool_:
            flat = x.reshape(-1)[:_SAMPLE]
            if not _mask_into(flat, np.empty(flat.shape, np.bool_)):
                return None
        n = x.shape[-1]
        width = packed_length(n) * 8
        mask, words = self._scratch((*x.shape[:-1], width))
        if width != n:
            mask[..., n:] = False
        if not _mask_into(x, mask[..., :n]):
            return None
        np.multiply(mask.view(np.uint64), _GATHER, out=words)
        words >>= _SHIFT
        return words.astype(np.uint8)


def pack_if_binary(x: np.ndarray) -> np.ndarray | None:
    """Pack ``x`` along its last axis if all its values are exactly 0 or 1.

    A convenience wrapper around :meth:`Packer.pack` without buffer reuse.
    """
    return Packer().pack(x)


def unpack_bits(packed: np.ndarray, n: int, dtype: np.dtype | str) -> np.ndarray:
    """Unpack along the last axis to ``n`` values of ``dtype`` (0 and 1)."""
    bits = np.unpackbits(packed, axis=-1, count=n, bitorder=BIT_ORDER)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return bits.view(np.bool_)
    return bits.astype(dtype)


def pack_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack ``x`` along its last axis on its own device, without synchronising.

    Used by :func:`spikestore.tensor_cache.float_spike_to_bool`; capture on
    CUDA uses :func:`pack_torch_flagged`, which this wraps.

    Returns
    -------
    (packed, is_binary)
        ``packed`` is ``uint8`` with the same layout (and bytes) as
        :func:`pack_if_binary`; ``is_binary`` is a 0-d bool tensor on the
        same device (reading it synchronises, so capture never does).
    """
    import torch

    flat = pack_torch_flagged(x)
    k = flat.numel() - 1
    shape = (*x.shape[:-1], packed_length(x.shape[-1]))
    return flat[:k].view(shape), flat[k].to(torch.bool)


#: The bit pattern of 1.0 in each float dtype: the binary check compares bits,
#: so -0.0 and NaN are not binary (as on the CPU).
_FLOAT_ONE_BITS = {"float16": 0x3C00, "bfloat16": 0x3F80, "float32": 0x3F800000,
                   "float64": 0x3FF0000000000000}
_INT_OF_WIDTH = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


def _bit_patterns(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` viewed as signed ints of its width, and the pattern of a 1 in that view.

    Unsigned 16/32/64-bit tensors have few kernels in torch; 0 and 1 have the
    same bits signed, so they are checked as signed.
    """
    import torch

    ints = getattr(torch, _INT_OF_WIDTH[x.element_size()])
    one = _FLOAT_ONE_BITS[str(x.dtype).removeprefix("torch.")] if x.is_floating_point() else 1
    return (x if x.dtype == ints else x.view(ints)), one


def pack_torch_flagged(x: torch.Tensor) -> torch.Tensor:
    """Pack ``x`` along its last axis on its device, followed by a binary flag, without synchronising.

    Parameters
    ----------
    x
        A real or bool tensor of at least one dimension, not empty.

    Returns
    -------
    torch.Tensor
        A flat ``uint8`` tensor of ``packed_nbytes(x.shape) + 1`` bytes: the
        packed records in the layout of :func:`pack_if_binary` (the same
        bytes, little bit order), then one byte that is 1 when every value of
        ``x`` was exactly 0 or 1 of its dtype and 0 otherwise (the packed
        bytes are then meaningless). One buffer, so capture copies it to the
        host in one transfer and the writer reads the flag with the bits.
    """
    import torch

    x = x.contiguous()
    n = x.shape[-1]
    lead = tuple(x.shape[:-1])
    width = packed_length(n)
    k = math.prod(lead) * width
    out = torch.empty(k + 1, dtype=torch.uint8, device=x.device)
    bits = torch.empty((*lead, width * 8), dtype=torch.bool, device=x.device)
    if width * 8 != n:
        bits[..., n:] = False
    flag = out[k:].view(torch.bool)
    if x.dtype == torch.bool:
        bits[..., :n] = x
        flag.fill_(True)
    else:
        u, one = _bit_patterns(x)
        torch.eq(u, one, out=bits[..., :n])
        # Binary when every non-zero pattern is the pattern of 1.
        torch.eq(torch.count_nonzero(u).view(1), torch.count_nonzero(bits).view(1), out=flag)
    # Eight 0/1 bytes read as one little-endian int64, times _GATHER, hold the
    # eight bits (little bit order) in their top byte: byte 7 of each word.
    words = bits.view(torch.uint8).view(torch.int64) * _GATHER_INT
    out[:k].view(*lead, width).copy_(words.view(torch.uint8)[..., 7::8])
    return out
