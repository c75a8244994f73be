"""The one table of chunk codecs, and the policy that picks one for a new segment.

Every chunk codec a store may name is a row here: how numcodecs decodes it
(what spikestore itself uses), the zarr v3 codec that lets plain zarr read
the same bytes, and the HDF5 filter that lets plain h5py + hdf5plugin read
them, where one exists. The checksums appended to every chunk have a row
each too. Backends only say which of those they store
(:attr:`~spikestore.backends.Backend.codec_target`); they never pick codecs.

=====================  ===========================  =====================  =================
id                     numcodecs                    zarr v3                HDF5 filter
=====================  ===========================  =====================  =================
``spikestore.spikes``  :class:`SpikeCodec`          ``spikestore.spikes``  none (zstd instead)
``zstd``               ``Zstd``                     ``zstd``               32015 (hdf5plugin)
``blosc``              ``Blosc``                    ``blosc``              32001 (hdf5plugin)
checksum ``crc32c``    ``CRC32C``                   ``crc32c``             none
checksum ``fletcher32``  ``Fletcher32``             none                   Fletcher-32 (built in)
=====================  ===========================  =====================  =================

spikestore decodes with the numcodecs functions of each row, but through
``into``, which bounds the output by the size the document expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spikestore.errors import FormatError, InvalidArgumentError

__all__ = ["CHECKSUMS", "CODECS", "TARGETS", "Checksum", "CodecRow", "checksum_row", "codec_row"]

#: What a backend can store: ``"zarr"`` (any row with a zarr codec) or ``"hdf5"`` (rows with an HDF5 filter).
TARGETS = ("zarr", "hdf5")
_SHUFFLE_NAMES = ("noshuffle", "shuffle", "bitshuffle")


@dataclass(frozen=True)
class CodecRow:
    """One chunk codec: how numcodecs, zarr and HDF5 express it, and how spikestore decodes it.

    Each of the first four fields takes the codec's stored JSON configuration
    (``{"id": ..., ...}``). ``hdf5`` is ``None`` where no HDF5 filter decodes
    the codec; ``instead`` then names the row used for HDF5 stores.
    ``into(payload, dest)`` decodes a chunk into the bytes ``dest``, refusing
    one whose header declares another size before it allocates or inflates
    anything (:mod:`spikestore.codecs._bounded`). ``rows(payload, lo, hi,
    row_bytes, expected)``, where a codec has one, decodes only rows
    ``lo:hi`` of a chunk when that is cheaper than the whole, and returns
    ``(bytes, whole)`` (:func:`~spikestore.codecs._spike_rows.decode_spike_rows`).
    """

    numcodecs: Callable[[dict[str, Any]], Any]
    zarr: Callable[[dict[str, Any]], Any]
    into: Callable[[Any, Any], Any]
    hdf5: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    instead: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    rows: Callable[[Any, int, int, int, int], tuple[Any, bool]] | None = None


@dataclass(frozen=True)
class Checksum:
    """A checksum appended to each encoded chunk (4 bytes)."""

    numcodecs: Callable[[], Any]
    zarr: Callable[[], Any] | None
    hdf5: dict[str, Any] | None


def _spikes_numcodecs(cfg: dict[str, Any]) -> Any:
    from spikestore.codecs._spikes import SpikeCodec

    return SpikeCodec(level=int(cfg["level"]), row_bits=cfg.get("row_bits"))


def _spikes_zarr(cfg: dict[str, Any]) -> Any:
    from spikestore.codecs._spikes import SpikeZarrCodec

    return SpikeZarrCodec(level=int(cfg["level"]), row_bits=cfg.get("row_bits"))


def _zstd_numcodecs(cfg: dict[str, Any]) -> Any:
    from numcodecs import Zstd

    return Zstd(level=int(cfg["level"]))


def _zstd_zarr(cfg: dict[str, Any]) -> Any:
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=int(cfg["level"]))


def _zstd_hdf5(cfg: dict[str, Any]) -> dict[str, Any]:
    import hdf5plugin

    return dict(hdf5plugin.Zstd(clevel=int(cfg["level"])))


def _blosc_numcodecs(cfg: dict[str, Any]) -> Any:
    from numcodecs import Blosc

    return Blosc(cname=cfg["cname"], clevel=int(cfg["clevel"]),
                 shuffle=_SHUFFLE_NAMES.index(cfg["shuffle"]), blocksize=0)


def _blosc_zarr(cfg: dict[str, Any]) -> Any:
    from zarr.codecs import BloscCodec

    return BloscCodec(cname=cfg["cname"], clevel=int(cfg["clevel"]), shuffle=cfg["shuffle"],
                      typesize=int(cfg["typesize"]))


def _blosc_hdf5(cfg: dict[str, Any]) -> dict[str, Any]:
    import hdf5plugin

    return dict(hdf5plugin.Blosc(cname=cfg["cname"], clevel=int(cfg["clevel"]),
                                 shuffle=_SHUFFLE_NAMES.index(cfg["shuffle"])))


def _spikes_into(payload: Any, dest: Any) -> Any:
    from spikestore.codecs._spikes import decode_spikes

    return decode_spikes(payload, dest)


def _spikes_rows(payload: Any, lo: int, hi: int, row_bytes: int, expected: int) -> tuple[Any, bool]:
    from spikestore.codecs._spike_rows import decode_spike_rows

    return decode_spike_rows(payload, lo, hi, row_bytes, expected)


def _zstd_into(payload: Any, dest: Any) -> Any:
    from spikestore.codecs._bounded import zstd_into

    return zstd_into(payload, dest)


def _blosc_into(payload: Any, dest: Any) -> Any:
    from spikestore.codecs._bounded import blosc_into

    return blosc_into(payload, dest)


def _crc32c() -> Any:
    from numcodecs import CRC32C

    return CRC32C()


def _crc32c_zarr() -> Any:
    from zarr.codecs import Crc32cCodec

    return Crc32cCodec()


def _fletcher32() -> Any:
    from numcodecs import Fletcher32

    return Fletcher32()


CODECS: dict[str, CodecRow] = {
    # No HDF5 filter implements the spike codec's gap coding: HDF5 stores take zstd over the bitmap.
    "spikestore.spikes": CodecRow(_spikes_numcodecs, _spikes_zarr, _spikes_into, None,
                                  instead=lambda cfg: {"id": "zstd", "level": cfg["level"]}, rows=_spikes_rows),
    "zstd": CodecRow(_zstd_numcodecs, _zstd_zarr, _zstd_into, _zstd_hdf5),
    "blosc": CodecRow(_blosc_numcodecs, _blosc_zarr, _blosc_into, _blosc_hdf5),
}

#: Checksums in order of preference: the first one a target stores is used.
CHECKSUMS: dict[str, Checksum] = {
    "crc32c": Checksum(_crc32c, _crc32c_zarr, None),
    # HDF5's own Fletcher-32 filter then checks the same bytes in any HDF5 reader.
    "fletcher32": Checksum(_fletcher32, None, {"fletcher32": True}),
}


def codec_row(codec_id: Any) -> CodecRow:
    """The row of ``codec_id``, or a :class:`FormatError` for a codec this version does not know."""
    row = CODECS.get(codec_id) if isinstance(codec_id, str) else None
    if row is None:
        raise FormatError(f"unknown chunk codec {codec_id!r}; upgrade spikestore to read this store")
    return row


def checksum_row(name: Any) -> Checksum:
    """The row of checksum ``name``, or a :class:`FormatError`."""
    row = CHECKSUMS.get(name) if isinstance(name, str) else None
    if row is None:
        raise FormatError(f"unknown chunk checksum {name!r}; upgrade spikestore to read this store")
    return row


def for_target(config: dict[str, Any], target: str) -> dict[str, Any]:
    """``config`` (without a checksum) turned into one that ``target`` can store, checksum included."""
    if target not in TARGETS:
        raise InvalidArgumentError(f"unknown codec target {target!r}; use one of {TARGETS}")
    row = codec_row(config["id"])
    if target == "hdf5" and row.hdf5 is None:
        assert row.instead is not None
        config = row.instead(config)
    checksum = next(name for name, c in CHECKSUMS.items() if (c.zarr if target == "zarr" else c.hdf5))
    return config if checksum == "crc32c" else config | {"checksum": checksum}
