"""Decompression that never inflates past what the caller expects.

A chunk's header says how many bytes it decodes to, and a damaged or crafted
chunk can say anything: an 18-byte spike chunk may ask for 8 GiB, a 30 KiB
zstd frame may hold a GiB of zeros. Every decoder here therefore takes the
size the document expects, compares the header with it before allocating
anything, and decompresses into a buffer of exactly that size, so it can
never write more. Each failure is a :class:`~spikestore.errors.ChecksumError`
(a damaged chunk), whatever the library underneath raised.

:data:`MAX_DECODED_BYTES` bounds the chunks of callers that expect no size
(plain numcodecs ``decode(buf)`` without ``out``): Blosc's own buffer limit,
and the limit of docs/format.md §3.1.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from spikestore._format.checks import MAX_CHUNK_BYTES
from spikestore.errors import ChecksumError

__all__ = ["MAX_DECODED_BYTES", "blosc_into", "check_size", "pcodec_values", "zstd_content_size",
           "zstd_into"]

#: The largest chunk any decoder inflates: the format's one limit on a decoded chunk
#: (2 GiB, Blosc's own; format.md §3.1), which documents are checked against too.
MAX_DECODED_BYTES = MAX_CHUNK_BYTES

_ZSTD_MAGIC = 0xFD2FB528
_BLOSC = struct.Struct("<BBBBIII")  # version, versionlz, flags, typesize, nbytes, blocksize, cbytes


def check_size(declared: int, expected: int | None, what: str) -> int:
    """``declared`` when it equals ``expected`` (or, with none expected, is at most the limit)."""
    if expected is not None and declared != expected:
        raise ChecksumError(f"{what} declares {declared} decoded bytes, but {expected} are expected")
    if declared > MAX_DECODED_BYTES:
        raise ChecksumError(f"{what} declares {declared} decoded bytes, over the limit of {MAX_DECODED_BYTES}")
    return declared


def zstd_content_size(src: Any) -> int:
    """The content size in the header of the zstd frame that starts ``src``.

    Raises :class:`ChecksumError` when ``src`` does not start with a zstd
    frame header or the frame does not declare its size (the writer's frames
    always do).
    """
    b = memoryview(src).cast("B")
    if len(b) < 5 or int.from_bytes(b[:4], "little") != _ZSTD_MAGIC:
        raise ChecksumError("not a zstd frame")
    fhd = b[4]
    single = (fhd >> 5) & 1
    fcs_size = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    if fhd & 0x08 or not fcs_size:  # a reserved bit, or no size
        raise ChecksumError("zstd frame does not declare its content size")
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    if len(b) < at + fcs_size:
        raise ChecksumError("zstd frame header is truncated")
    size = int.from_bytes(b[at:at + fcs_size], "little")
    return size + 256 if fcs_size == 2 else size


def zstd_into(src: Any, dest: np.ndarray, what: str = "zstd frame") -> np.ndarray:
    """Decompress the zstd frame ``src`` into ``dest`` (bytes), which it must fill exactly."""
    from numcodecs.zstd import decompress

    out = dest.reshape(-1).view(np.uint8)
    check_size(zstd_content_size(src), out.nbytes, what)
    if not out.nbytes:
        return dest  # numcodecs returns early for an empty frame, without looking at the rest
    try:
        # numcodecs checks that the frame decodes to exactly its declared size,
        # and zstd never writes past the end of ``out``.
        decompress(src, out)
    except (RuntimeError, ValueError) as exc:
        raise ChecksumError(f"{what} does not decompress ({exc})") from None
    return dest


def blosc_into(src: Any, dest: np.ndarray, what: str = "blosc frame") -> np.ndarray:
    """Decompress the Blosc-1 frame ``src`` into ``dest`` (bytes), which it must fill exactly.

    Blosc trusts its header's compressed size, so that is checked against
    ``src`` first (it would read past the buffer otherwise).
    """
    from numcodecs.blosc import decompress

    b = memoryview(src).cast("B")
    if len(b) < _BLOSC.size:
        raise ChecksumError(f"{what} is truncated ({len(b)} bytes)")
    nbytes, cbytes = _BLOSC.unpack_from(b)[4], _BLOSC.unpack_from(b)[6]
    out = dest.reshape(-1).view(np.uint8)
    check_size(nbytes, out.nbytes, what)
    if cbytes != len(b):
        raise ChecksumError(f"{what} says it holds {cbytes} bytes, but {len(b)} are there")
    try:
        decompress(src, out)
    except (RuntimeError, ValueError) as exc:
        raise ChecksumError(f"{what} does not decompress ({exc})") from None
    return dest


def pcodec_values(src: Any, dtype: Any, most: int, what: str = "pcodec data") -> np.ndarray:
    """The numbers of the standalone pcodec file ``src``, refused if more than ``most``.

    pcodec files do not say up front how many numbers they hold, and a few
    bytes can hold millions. Decoding goes into a buffer of 8 numbers per
    compressed byte (real data takes at least a bit a number: one pass), which
    doubles while more numbers come, and stops once a buffer of ``most + 1``
    would be needed, so memory stays proportional to what is really there.
    """
    from pcodec import standalone

    src = bytes(src)
    size = min(most + 1, max(1 << 12, 8 * len(src)))
    while True:
        dst = np.empty(size, dtype=dtype)
        try:
            progress = standalone.simple_decompress_into(src, dst)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ChecksumError(f"{what} does not decompress ({exc})") from None
        if progress.finished and progress.n_processed < size:
            return dst[:progress.n_processed]
        if size > most:
            raise ChecksumError(f"{what} holds more than {most} values")
        size = min(most + 1, 2 * size)
