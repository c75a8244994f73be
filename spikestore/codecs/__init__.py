"""How records become bytes: bit packing, the spike codec, float codecs, lossy precision.

Public here: :class:`SpikeCodec` (numcodecs id ``spikestore.spikes``) and
``SpikeZarrCodec`` (the same codec for zarr v3), which the package's entry
points register so that plain zarr, xarray and dask decode spike chunks once
spikestore is installed. The rest (``_table``: one table of every chunk
codec; ``_chunk``: encode/decode with a checksum; ``_packing`` and
``_kernels``: the bit order and its compiled kernels; ``_precision``: lossy
floats) is used by the write and read sides.
"""

from __future__ import annotations

from typing import Any

from spikestore.codecs._spikes import CODEC_ID, SpikeCodec, decode_spikes, encode_spikes

__all__ = ["CODEC_ID", "SpikeCodec", "SpikeZarrCodec", "decode_spikes", "encode_spikes"]


def __getattr__(name: str) -> Any:
    # zarr is imported only when its codec class is asked for (the zarr.codecs entry point).
    if name == "SpikeZarrCodec":
        from spikestore.codecs import _spikes

        return _spikes.SpikeZarrCodec
    raise AttributeError(f"module 'spikestore.codecs' has no attribute {name!r}")
