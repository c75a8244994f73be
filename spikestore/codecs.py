"""Chunk codecs: how the writer turns a chunk of records into bytes.

The writer encodes whole chunks itself (on its own thread, with codecs that
release the GIL) and hands the backend finished bytes. Every codec here is
also expressible as a standard zarr v3 codec chain, so a plain
``zarr.open(...)`` decodes the same bytes:

=========  ==========================================  ==================================
encoding   spikestore codec                            zarr v3 codecs
=========  ==========================================  ==================================
bits       the spike codec over the packed chunk        bytes, spikestore.spikes, crc32c
           (:mod:`spikestore.spike_codec`)
raw        blosc (lz4, bit shuffle) over the chunk      bytes(little), blosc, crc32c
=========  ==========================================  ==================================

Older stores may also hold bits chunks with plain ``zstd``; both are read.

Each encoded chunk ends with a CRC-32C of the compressed bytes (4 bytes,
little endian), so ``spikestore verify`` and every read detect damage.
"""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
from numcodecs import Blosc, Zstd

from .errors import FormatError

__all__ = ["ChecksumError", "ChunkCodec", "codec_for", "codec_from_config", "index_codec"]

_CRC = numcodecs.CRC32C()


class ChecksumError(ValueError):
    """Raised by :meth:`ChunkCodec.decode` when the checksum does not match."""


class ChunkCodec:
    """Encode a chunk ``ndarray`` to bytes and back, zarr-compatibly.

    Parameters
    ----------
    config
        The codec's JSON configuration as stored in a segment's ``codec``
        field; see :func:`codec_for` for the defaults.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        cid = config.get("id")
        if cid == "spikestore.spikes":
            from .spike_codec import SpikeCodec

            self._inner: numcodecs.abc.Codec = SpikeCodec(level=int(config["level"]))
        elif cid == "zstd":
            self._inner = Zstd(level=int(config["level"]))
        elif cid == "blosc":
            shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE,
                       "bitshuffle": Blosc.BITSHUFFLE}[config["shuffle"]]
            self._inner = Blosc(cname=config["cname"], clevel=int(config["clevel"]),
                                shuffle=shuffle, blocksize=0)
        else:
            raise FormatError(f"unknown chunk codec {cid!r}; upgrade spikestore to read this store")

    def encode(self, chunk: np.ndarray) -> bytes:
        """Compress a C-contiguous chunk and append its CRC-32C."""
        chunk = np.ascontiguousarray(chunk)
        if chunk.dtype.byteorder == ">":
            chunk = chunk.astype(chunk.dtype.newbyteorder("<"))
        return bytes(_CRC.encode(self._inner.encode(chunk)))

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
        """Check the CRC-32C, decompress, and return an array of ``shape``."""
        try:
            payload = _CRC.decode(data)
        except RuntimeError as exc:
            raise ChecksumError(str(exc)) from None
        dtype = np.dtype(dtype)
        out = np.empty(shape, dtype=dtype)
        try:
            self._inner.decode(payload, out=out.reshape(-1).view(np.uint8))
        except (RuntimeError, ValueError) as exc:
            raise ChecksumError(f"chunk does not decompress: {exc}") from None
        return out

    def zarr_compressors(self) -> list[Any]:
        """The zarr v3 bytes-to-bytes codecs equivalent to this codec."""
        from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

        cfg = self.config
        if cfg["id"] == "spikestore.spikes":
            from .spike_codec import SpikeZarrCodec

            first: Any = SpikeZarrCodec(level=int(cfg["level"]))
        elif cfg["id"] == "zstd":
            first = ZstdCodec(level=int(cfg["level"]))
        else:
            first = BloscCodec(cname=cfg["cname"], clevel=int(cfg["clevel"]),
                               shuffle=cfg["shuffle"], typesize=int(cfg["typesize"]))
        return [first, Crc32cCodec()]


#: Records smaller than this are compressed for size rather than speed.
SMALL_RECORD_BYTES = 4096


def codec_for(encoding: str, stored_dtype: np.dtype, level: int | None = None,
              record_bytes: int | None = None) -> ChunkCodec:
    """The default codec for a segment of ``encoding`` and ``stored_dtype``.

    Bits go through the spike codec, which picks bitmap or gap coding per
    chunk. Raw numbers go through blosc with lz4 after a bit shuffle: on LIF
    voltages from a SpikingJelly run it keeps 86% of float32 at ~750 MB/s,
    where zstd (level 1) keeps 87-92% at ~200 MB/s and pcodec 83% at ~70
    MB/s (docs/performance.md). Float streams barely compress losslessly,
    so the writer favours speed; lossy ``precision`` is the way to shrink them.
    Small records (scalars such as gradient norms) cost no time either way,
    and a partly filled chunk of them is mostly zero padding, which zstd
    shrinks to nothing, so they use zstd.
    """
    if encoding == "bits":
        return ChunkCodec({"id": "spikestore.spikes", "level": 1 if level is None else level})
    if record_bytes is not None and record_bytes < SMALL_RECORD_BYTES:
        return ChunkCodec({"id": "zstd", "level": 3})
    return ChunkCodec({"id": "blosc", "cname": "lz4", "clevel": 5 if level is None else level,
                       "shuffle": "bitshuffle", "typesize": stored_dtype.itemsize})


def index_codec(dtype: np.dtype) -> ChunkCodec:
    """Codec of the step/call/time index arrays: small, so favour ratio over speed
    (a partly filled chunk is zero-padded, and zstd shrinks padding to nothing)."""
    return ChunkCodec({"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": "bitshuffle",
                       "typesize": dtype.itemsize})


def codec_from_config(config: dict[str, Any]) -> ChunkCodec:
    """Rebuild a codec from a segment's stored ``codec`` document."""
    return ChunkCodec(config)
