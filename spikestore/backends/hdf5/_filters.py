"""Chunk codecs as HDF5 filter pipelines, so that plain h5py readers decode every chunk.

One job: choose the chunk codecs of an HDF5 store and describe them to
HDF5. The writer encodes each chunk itself and the backend stores the bytes
with ``write_direct_chunk``, so a dataset's filter pipeline (Zstd 32015 or
Blosc 32001 from ``hdf5plugin``, then Fletcher-32) must be exactly what the
codec produced. No HDF5 filter implements the spike codec, so bits chunks
are plain zstd here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikestore.codecs._chunk import ChunkCodec, codec_for, index_codec
from spikestore.errors import FormatError

__all__ = ["FilterCodecs", "filters"]

_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def filters(codec: ChunkCodec) -> dict[str, Any]:
    """``create_dataset`` keywords whose filter pipeline decodes ``codec``'s chunks."""
    import hdf5plugin

    cfg = codec.config
    if codec.checksum != "fletcher32":
        raise FormatError(f"codec {cfg} ends in a {codec.checksum} checksum, which HDF5 cannot check; "
                          "HDF5 stores use HDF5Backend.codec_for")
    if cfg["id"] == "zstd":
        pipeline: dict[str, Any] = dict(hdf5plugin.Zstd(clevel=int(cfg["level"])))
    elif cfg["id"] == "blosc":
        pipeline = dict(hdf5plugin.Blosc(cname=cfg["cname"], clevel=int(cfg["clevel"]),
                                         shuffle=_SHUFFLE[cfg["shuffle"]]))
    else:
        raise FormatError(f"chunk codec {cfg['id']!r} is no HDF5 filter; HDF5 stores use "
                          "HDF5Backend.codec_for")
    return pipeline | {"fletcher32": True}


def _hdf5_codec(codec: ChunkCodec) -> ChunkCodec:
    """``codec`` as an HDF5 filter pipeline: the spike codec becomes zstd (no
    HDF5 filter implements it), and the checksum becomes Fletcher-32."""
    cfg = dict(codec.config)
    if cfg["id"] == "spikestore.spikes":
        cfg = {"id": "zstd", "level": cfg["level"]}
    return ChunkCodec(cfg | {"checksum": "fletcher32"})


class FilterCodecs:
    """The backend protocol's codec methods for HDF5 (mixed into ``HDF5Backend``)."""

    def codec_for(self, encoding: str, stored_dtype: np.dtype, level: int | None = None,
                  record_bytes: int | None = None, row_bits: int | None = None) -> ChunkCodec:
        # No HDF5 filter implements the spike codec's row-aware gap coding.
        return _hdf5_codec(codec_for(encoding, stored_dtype, level, record_bytes))

    def index_codec(self, dtype: np.dtype) -> ChunkCodec:
        return _hdf5_codec(index_codec(dtype))
