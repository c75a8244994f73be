"""Chunk codecs: how the writer turns a chunk of records into bytes, and back.

The writer encodes whole chunks itself (on its own thread, with codecs that
release the GIL) and hands the backend finished bytes. A
:class:`ChunkCodec` is one row of the codec table (:mod:`spikestore.codecs._table`)
plus a checksum (4 bytes, little endian) appended to every chunk, so
``spikestore verify`` and every read detect damage. Between the compressed
bytes and the checksum, chunks of stores written before identity tags
carry an identity frame (:mod:`spikestore.codecs._identity`); newer chunks
are exactly what their codecs produce, bound to their place by tags in
their document. Decoding checks the checksum and the identity, then
inflates into a buffer of exactly the size the document expects
(:mod:`spikestore.codecs._bounded`):

=========  ==========================================  ==================================
encoding   spikestore codec (Zarr stores)              zarr v3 codecs
=========  ==========================================  ==================================
bits       the spike codec over the packed chunk        bytes, spikestore.spikes, crc32c
raw        blosc (lz4, bit shuffle) over the chunk      bytes(little), blosc, crc32c
=========  ==========================================  ==================================

HDF5 stores take the HDF5 filters of the same table (zstd for bits, since
no filter implements the spike codec) and Fletcher-32, which HDF5 itself
checks. Older stores may also hold bits chunks with plain ``zstd``; both
are read. The checksum is CRC-32C unless the configuration says
``"checksum": "fletcher32"``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spikestore.codecs._bounded import MAX_DECODED_BYTES
from spikestore.codecs._identity import ChunkIdentity, split_frame
from spikestore.codecs._table import checksum_row, codec_row, for_target
from spikestore.errors import ChecksumError, InvalidArgumentError

__all__ = ["ChecksumError", "ChunkCodec", "codec_for", "codec_from_config", "index_codec"]


class ChunkCodec:
    """Encode a chunk ``ndarray`` to bytes and back, as zarr and HDF5 readers would.

    Parameters
    ----------
    config
        The codec's JSON configuration as stored in a segment's ``codec``
        field (see :func:`codec_for` for the defaults). An optional
        ``"checksum"`` (``"crc32c"`` when absent, or ``"fletcher32"``) names
        the checksum appended to each chunk.

    Raises
    ------
    FormatError
        For a codec or checksum this version of spikestore does not know.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self.checksum = config.get("checksum", "crc32c")
        self._row = codec_row(config.get("id"))
        self._check = checksum_row(self.checksum)
        self._inner = self._row.numcodecs(self.config)
        self._sum = self._check.numcodecs()

    def encode(self, chunk: np.ndarray, frame: bytes = b"") -> bytes:
        """Compress a C-contiguous chunk, append ``frame`` (an identity frame, for framed arrays) and the checksum."""
        chunk = np.ascontiguousarray(chunk)
        if chunk.dtype.byteorder == ">":
            chunk = chunk.astype(chunk.dtype.newbyteorder("<"))
        payload = self._inner.encode(chunk)
        return bytes(self._sum.encode(bytes(payload) + frame if frame else payload))

    def decode(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype | str, *,
               identity: ChunkIdentity | None = None, chunk: int = 0) -> np.ndarray:
        """Check the checksum and the identity, decompress, and return an array of ``shape``.

        ``identity`` is what the chunk's document entry says its chunks carry
        and ``chunk`` its number; without one a trailing identity frame is
        skipped unchecked.

        Raises
        ------
        ChecksumError
            When the checksum does not match, or the payload does not decode
            to exactly ``shape`` (checked before anything is allocated).
        IdentityError
            A :class:`ChecksumError` too: the identity frame disagrees with ``identity``.
        FormatError
            For an identity version newer than this spikestore reads.
        """
        payload, dtype, bound = self._checked(data, shape, dtype, identity, chunk)
        out = np.empty(shape, dtype=dtype)
        self._row.into(payload, out.reshape(-1).view(np.uint8))
        if not bound and identity is not None:
            identity.check_rows(out, chunk, data)
        return out

    def decode_rows(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype | str, lo: int, hi: int, *,
                    identity: ChunkIdentity | None = None, chunk: int = 0) -> tuple[np.ndarray, bool]:
        """Rows ``lo:hi`` (along axis 0) of a chunk of ``shape``, decoding no more than needed.

        The checksum and the identity are checked as in :meth:`decode`. For
        gap-coded spike chunks only the wanted rows are expanded
        (:mod:`spikestore.codecs._spike_rows`: a tenth of the time of a whole
        chunk for one record); every other chunk is decoded whole.

        Returns
        -------
        (array, whole)
            ``whole`` True: ``array`` is the whole chunk (``shape``), worth
            keeping; False: it holds rows ``lo:hi`` alone.

        Raises
        ------
        ChecksumError, IdentityError, FormatError
            As :meth:`decode`.
        """
        if self._row.rows is None or not 0 <= lo <= hi <= shape[0]:
            return self.decode(data, shape, dtype, identity=identity, chunk=chunk), True
        payload, dtype, bound = self._checked(data, shape, dtype, identity, chunk)
        if not bound:  # (a last chunk rewritten after its commit: its committed rows are checked whole)
            return self.decode(data, shape, dtype, identity=identity, chunk=chunk), True
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        got, whole = self._row.rows(payload, lo, hi, row_bytes, shape[0] * row_bytes)
        return np.asarray(got).view(dtype).reshape(shape if whole else (hi - lo, *shape[1:])), whole

    def _checked(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype | str,
                 identity: ChunkIdentity | None, chunk: int) -> tuple[memoryview, np.dtype, bool]:
        """The compressed payload of a chunk whose checksum and identity hold, ``dtype``, and whether
        the chunk is bound (False: a last chunk whose decoded rows :meth:`ChunkIdentity.check_rows`
        must check), refusing a ``shape`` over the decoded-chunk limit."""
        try:
            checked = self._sum.decode(data)
        except Exception as exc:  # noqa: BLE001 - numcodecs raises RuntimeError or, on short input, others
            raise ChecksumError(f"{self.checksum} checksum mismatch ({exc})") from None
        bound = True
        if identity is not None and identity.tagged:
            payload = memoryview(checked).cast("B")
            bound = identity.check_chunk(data, chunk)
        else:
            payload, frame = split_frame(checked)
            if identity is not None:
                identity.check(frame, chunk)
        dtype = np.dtype(dtype)
        if math.prod(shape) * dtype.itemsize > MAX_DECODED_BYTES:
            raise ChecksumError(f"a chunk of shape {shape} and dtype {dtype} is over the limit of "
                                f"{MAX_DECODED_BYTES} bytes")
        return payload, dtype, bound

    def zarr_codecs(self) -> list[Any]:
        """The zarr v3 bytes-to-bytes codecs that decode this codec's chunks."""
        if self._check.zarr is None:
            raise InvalidArgumentError(f"a {self.checksum} checksum has no zarr codec; Zarr stores use crc32c")
        return [self._row.zarr(self.config), self._check.zarr()]

    def hdf5_filters(self) -> dict[str, Any]:
        """``h5py.create_dataset`` keywords whose filter pipeline decodes this codec's chunks."""
        if self._row.hdf5 is None or self._check.hdf5 is None:
            raise InvalidArgumentError(f"codec {self.config} is not an HDF5 filter pipeline; HDF5 stores use "
                             "codec_for(..., target='hdf5')")
        return self._row.hdf5(self.config) | self._check.hdf5


#: Records smaller than this are compressed for size rather than speed.
SMALL_RECORD_BYTES = 4096

#: The compression levels every chunk codec takes: zstd's for bits, blosc's
#: ``clevel`` (which stops at 9) for raw records.
COMPRESSION_LEVELS = range(1, 10)


def check_level(level: object) -> int:
    """``level`` as an ``int`` if it is one of :data:`COMPRESSION_LEVELS`; else a clear error.

    Checked when a store opens: a level the codecs refuse would otherwise
    stop the writer at the first chunk, and a float (``2.5``) would be
    written into the stream documents and fail their schema on reading.
    """
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level not in COMPRESSION_LEVELS:
        raise InvalidArgumentError(
            f"compression_level must be an integer from {COMPRESSION_LEVELS.start} to {COMPRESSION_LEVELS.stop - 1} "
            f"(zstd's level for spikes, blosc's for other records; default 1), not {level!r}")
    return int(level)


def codec_for(encoding: str, stored_dtype: np.dtype, level: int | None = None,
              record_bytes: int | None = None, row_bits: int | None = None, *,
              target: str = "zarr") -> ChunkCodec:
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
    elif record_bytes is not None and record_bytes < SMALL_RECORD_BYTES:
        cfg = {"id": "zstd", "level": 3}
    else:
        cfg = {"id": "blosc", "cname": "lz4", "clevel": 5 if level is None else level,
               "shuffle": "bitshuffle", "typesize": stored_dtype.itemsize}
    return ChunkCodec(for_target(cfg, target))


def index_codec(dtype: np.dtype, *, target: str = "zarr") -> ChunkCodec:
    """Codec of the step/call/time index arrays: small, so favour ratio over speed
    (a partly filled chunk is zero-padded, and zstd shrinks padding to nothing)."""
    return ChunkCodec(for_target({"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": "bitshuffle",
                                  "typesize": dtype.itemsize}, target))


def codec_from_config(config: dict[str, Any]) -> ChunkCodec:
    """Rebuild a codec from a segment's stored ``codec`` document."""
    return ChunkCodec(config)
