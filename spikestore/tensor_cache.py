"""Compact in-memory spikes, with the names and signatures of SpikingJelly's ``tensor_cache``.

``float_spike_to_bool`` packs a binary tensor eight spikes per byte and
``bool_spike_to_float`` restores it exactly. The bit order is the one used
everywhere in spikestore (:data:`spikestore.codecs._packing.BIT_ORDER`: first
value in the least significant bit, as ``np.packbits(..., bitorder="little")``),
and the work happens on the tensor's own device.

With a :class:`spikestore.Store` you do not need these: the writer packs
binary records itself. They serve code written against SpikingJelly's
``tensor_cache`` module.
"""

from __future__ import annotations

from spikestore.errors import InvalidValueError, MissingDependencyError

try:
    import torch
except ImportError:
    raise MissingDependencyError("spikestore.tensor_cache packs torch tensors and needs torch: "
                                 "pip install 'spikestore[record]'") from None

from spikestore.codecs._packing import pack_torch

__all__ = ["bool_spike_to_float", "float_spike_to_bool"]


def float_spike_to_bool(spike: torch.Tensor) -> tuple[torch.Tensor, torch.dtype, torch.Size, int]:
    """Pack a tensor of 0/1 values into ``uint8``, 8 spikes per byte.

    Returns
    -------
    (spike_b, s_dtype, s_shape, s_padding)
        ``spike_b`` is a flat ``uint8`` tensor of ``ceil(numel / 8)`` bytes;
        the other three are what :func:`bool_spike_to_float` needs to
        restore the original tensor.

    Raises
    ------
    InvalidValueError
        If a value is not exactly 0 or 1 (packing would lose it). The check
        reads one flag back from the device, so this synchronises on CUDA.
    """
    s_dtype, s_shape = spike.dtype, spike.shape
    flat = spike.detach().reshape(-1)
    s_padding = (8 - flat.numel() % 8) % 8
    packed, ok = pack_torch(flat)
    if not bool(ok):
        raise InvalidValueError("float_spike_to_bool: the tensor has values other than 0 and 1")
    return packed, s_dtype, s_shape, s_padding


def bool_spike_to_float(spike_b: torch.Tensor, s_dtype: torch.dtype, s_shape: torch.Size,
                        s_padding: int = 0) -> torch.Tensor:
    """Invert :func:`float_spike_to_bool` exactly."""
    # Bit k of each byte is value k of its group of eight (BIT_ORDER "little").
    bits = torch.arange(8, device=spike_b.device, dtype=torch.uint8)
    flat = (spike_b.reshape(-1, 1).to(torch.uint8) >> bits) & 1
    flat = flat.reshape(-1)
    n = flat.numel() - s_padding
    return flat[:n].to(s_dtype).reshape(s_shape)
