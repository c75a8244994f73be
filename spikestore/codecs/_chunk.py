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

Each encoded chunk ends with a checksum of the compressed bytes (4 bytes,
little endian), so ``spikestore verify`` and every read detect damage. It is
a CRC-32C (the zarr v3 ``crc32c`` codec) unless the codec configuration says
``"checksum": "fletcher32"``: the HDF5 backend asks for that variant
(:meth:`~spikestore.backends.base.Backend.codec_for`) because HDF5's own
Fletcher-32 filter then verifies the same bytes in any HDF5 reader.
"""

from __future__ import annotations

import struct
from typing import Any

import numcodecs
import numpy as np
from numcodecs import Blosc, Zstd

from spikestore.errors import FormatError

__all__ = ["ChecksumError", "ChunkCodec", "codec_for", "codec_from_config", "fletcher32", "index_codec"]

_CRC = numcodecs.CRC32C()
_CHECKSUMS = ("crc32c", "fletcher32")
_U32 = struct.Struct("<I")


class ChecksumError(ValueError):
    """Raised by :meth:`ChunkCodec.decode` when the checksum does not match."""


class ChunkCodec:
    """Encode a chunk ``ndarray`` to bytes and back, zarr-compatibly.

    Parameters
    ----------
    config
        The codec's JSON configuration as stored in a segment's ``codec``
        field; see :func:`codec_for` for the defaults. An optional
        ``"checksum"`` (``"crc32c"`` when absent, or ``"fletcher32"``) names
        the checksum appended to each chunk.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self.checksum = config.get("checksum", "crc32c")
        if self.checksum not in _CHECKSUMS:
            raise FormatError(f"unknown chunk checksum {self.checksum!r}; upgrade spikestore to read "
                              "this store")
        cid = config.get("id")
        if cid == "spikestore.spikes":
            from spikestore.codecs._spikes import SpikeCodec

            self._inner: numcodecs.abc.Codec = SpikeCodec(level=int(config["level"]),
                                                          row_bits=config.get("row_bits"))
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
        """Compress a C-contiguous chunk and append its checksum."""
        chunk = np.ascontiguousarray(chunk)
        if chunk.dtype.byteorder == ">":
            chunk = chunk.astype(chunk.dtype.newbyteorder("<"))
        payload = self._inner.encode(chunk)
        if self.checksum == "fletcher32":
            return bytes(payload) + _U32.pack(fletcher32(payload))
        return bytes(_CRC.encode(payload))

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
        """Check the checksum, decompress, and return an array of ``shape``."""
        if self.checksum == "fletcher32":
            payload: Any = memoryview(data)[:-4]
            if len(data) < 4 or _U32.unpack_from(data, len(data) - 4)[0] != fletcher32(payload):
                raise ChecksumError("Fletcher-32 checksum mismatch")
        else:
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
            from spikestore.codecs._spikes import SpikeZarrCodec

            first: Any = SpikeZarrCodec(level=int(cfg["level"]), row_bits=cfg.get("row_bits"))
        elif cfg["id"] == "zstd":
            first = ZstdCodec(level=int(cfg["level"]))
        else:
            first = BloscCodec(cname=cfg["cname"], clevel=int(cfg["clevel"]),
                               shuffle=cfg["shuffle"], typesize=int(cfg["typesize"]))
        return [first, Crc32cCodec()]


#: Records smaller than this are compressed for size rather than speed.
SMALL_RECORD_BYTES = 4096


def codec_for(encoding: str, stored_dtype: np.dtype, level: int | None = None,
              record_bytes: int | None = None, row_bits: int | None = None) -> ChunkCodec:
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
        cfg: dict[str, Any] = {"id": "spikestore.spikes", "level": 1 if level is None else level}
        if row_bits is not None and row_bits % 8:
            cfg["row_bits"] = row_bits  # the gap coders then skip each row's padding bits
        return ChunkCodec(cfg)
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


_F32_BLOCK = 360
_F32_WEIGHTS = np.arange(_F32_BLOCK, 0, -1, dtype=np.float64)
# A block's weighted word sum above this could wrap HDF5's 32-bit sum2
# (sum1 and sum2 enter a block folded to at most 0x1FFFE each).
_F32_SAFE = 0xFFFFFFFF - 0x1FFFE * (_F32_BLOCK + 1)


def _fold(x: int) -> int:
    return (x & 0xFFFF) + (x >> 16)


def fletcher32(data: Any) -> int:
    """HDF5's Fletcher-32 checksum (``H5_checksum_fletcher32``), bit for bit.

    HDF5 adds big-endian 16-bit words (an odd last byte is the high byte of
    a last word) to ``sum1`` and ``sum1`` to ``sum2``, folding both to 16 bits
    with an end-around carry after every 360 words. A fold keeps a sum's
    value modulo 65535 and never turns a positive sum into 0, so the result
    is each sum's residue in 1..65535 (0 only for all-zero input), which
    numpy computes from per-block sums without the byte loop. Only an input
    whose block sums could wrap HDF5's 32-bit ``sum2`` (words near 0xFFFF
    throughout a block) takes the block-by-block path.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    n = buf.size // 2
    odd = int(buf[-1]) << 8 if buf.size % 2 else None
    w = buf[: 2 * n].view(">u2").astype(np.float64)  # all sums below stay exact in float64
    full = n - n % _F32_BLOCK
    blocks = w[:full].reshape(-1, _F32_BLOCK)
    sums = [np.dot(blocks, np.ones(_F32_BLOCK))]
    weighted = [np.dot(blocks, _F32_WEIGHTS)]
    lens = [np.full(len(blocks), _F32_BLOCK, dtype=np.int64)]
    if n > full:
        tail = w[full:]
        sums.append(np.array([tail.sum()]))
        weighted.append(np.array([np.dot(tail, _F32_WEIGHTS[_F32_BLOCK - tail.size:])]))
        lens.append(np.array([tail.size], dtype=np.int64))
    s_b = np.concatenate(sums).astype(np.int64)
    w_b = np.concatenate(weighted).astype(np.int64)
    l_b = np.concatenate(lens)
    if w_b.size and int(w_b.max()) > _F32_SAFE:
        s1 = s2 = 0
        for length, s, wt in zip(l_b.tolist(), s_b.tolist(), w_b.tolist()):
            s2 = _fold((s2 + length * s1 + wt) & 0xFFFFFFFF)
            s1 = _fold(s1 + s)
        if odd is not None:
            s1 = _fold(s1 + odd)
            s2 = _fold(s2 + s1)
        return (_fold(s2) << 16) | _fold(s1)
    # Word i of n is added to sum2 (n - i) times: block b (words from
    # start_b, length L_b) contributes (n - start_b - L_b) * S_b + W_b.
    after = (n - np.cumsum(l_b)) % 65535
    s1 = int(s_b.sum())
    s2 = int(np.dot(after, s_b % 65535)) + int(w_b.sum())
    if odd is not None:
        s1 += odd
        s2 += s1
    if s1 == 0:
        return 0
    return (((s2 - 1) % 65535 + 1) << 16) | ((s1 - 1) % 65535 + 1)
