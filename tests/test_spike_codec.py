"""The spike codec: exact round trips, fixed bytes, registration for numcodecs and zarr.

Also every chunk decoder's bounds: a header that declares another decoded
size than the document's is refused before anything is allocated, and no
decoder inflates more than it expects (zstd and pcodec bombs, gap counts).
"""

from __future__ import annotations

import dataclasses
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numcodecs import CRC32C, Blosc, Fletcher32, Zstd

import spikestore
from spikestore.codecs._chunk import ChunkCodec
from spikestore.codecs._spikes import MODES, NEURONS_FROM_LEVEL, SpikeCodec, decode_spikes, encode_spikes
from spikestore.errors import ChecksumError, SpikestoreError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 5000), p=st.sampled_from([0.0, 0.001, 0.01, 0.03, 0.1, 0.2, 0.5, 0.97, 1.0]),
       seed=st.integers(0, 2**32 - 1), level=st.sampled_from([1, 3]))
def test_round_trip_any_density_and_length(n, p, seed, level):
    packed = np.packbits(np.random.default_rng(seed).random(n) < p, bitorder="little")
    enc = encode_spikes(packed, level)
    np.testing.assert_array_equal(decode_spikes(enc), packed)


@given(st.binary(max_size=3000))
def test_round_trip_arbitrary_bytes(raw):
    packed = np.frombuffer(raw, dtype=np.uint8)
    np.testing.assert_array_equal(decode_spikes(encode_spikes(packed)), packed)


def test_all_zero_all_one_and_long_runs():
    for packed in (np.zeros(1000, np.uint8), np.full(1000, 255, np.uint8), np.zeros(0, np.uint8),
                   np.r_[np.zeros(100_000, np.uint8), [1], np.zeros(9, np.uint8)].astype(np.uint8)):
        np.testing.assert_array_equal(decode_spikes(encode_spikes(packed)), packed)
    sparse = np.zeros(1 << 20, np.uint8)
    sparse[[3, 70_000, (1 << 20) - 1]] = [1, 128, 255]  # gaps far above 255
    np.testing.assert_array_equal(decode_spikes(encode_spikes(sparse)), sparse)


@pytest.mark.parametrize("mode", [*MODES, "gaps8-rows", "gaps-pcodec-rows", "neurons-padded", "neurons-channels"])
def test_committed_fixtures_still_decode(mode):
    enc = (FIXTURES / f"spikes-{mode}.bin").read_bytes()
    assert MODES[enc[1] & 0x7F] + ("-rows" if enc[1] & 0x80 else "") == mode.removesuffix("-padded").removesuffix(
        "-channels")
    want = np.load(FIXTURES / f"spikes-{mode}.expected.npy", allow_pickle=False)  # (neurons: in chunk shape)
    np.testing.assert_array_equal(decode_spikes(enc), want.reshape(-1))
    rows = FIXTURES / f"spikes-{mode}.row_bits"
    row_bits = int(rows.read_text()) if rows.exists() else None
    # Today's encoder may produce other bytes (a zstd or pcodec upgrade), but no larger ones.
    again = encode_spikes(want, NEURONS_FROM_LEVEL if mode.startswith("neurons") else 1, row_bits=row_bits)
    np.testing.assert_array_equal(decode_spikes(again), want.reshape(-1))
    assert len(again) <= 1.02 * len(enc) + 16


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 300), width=st.integers(1, 40),
       p=st.sampled_from([0.0, 0.002, 0.02, 0.1, 0.5]), seed=st.integers(0, 2**32 - 1))
def test_padded_rows_round_trip_and_cost_no_more(rows, width, p, seed):
    bits = np.random.default_rng(seed).random((rows, width)) < p
    packed = np.packbits(bits, axis=-1, bitorder="little")
    enc = encode_spikes(packed, row_bits=width)
    np.testing.assert_array_equal(decode_spikes(enc), packed.reshape(-1))
    assert len(enc) <= 1.02 * len(encode_spikes(packed)) + 16  # a row length and frame overheads


def test_row_mode_is_skipped_when_padding_bits_are_set():
    packed = np.full(40, 0b1000_0000, dtype=np.uint8)  # bit 7 set in rows of 5 bits: not padding
    enc = encode_spikes(packed, row_bits=5)
    assert not enc[1] & 0x80
    np.testing.assert_array_equal(decode_spikes(enc), packed)


def test_padded_rows_reach_the_bound_too():
    p, width = 0.05, 10
    bits = np.random.default_rng(4).random((100_000, width)) < p
    packed = np.packbits(bits, axis=-1, bitorder="little")
    bound = bits.size * -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) / 8
    flat = packed.reshape(-1)  # (a flat buffer: no neuron coding, which would learn the padding too)
    assert len(encode_spikes(flat, row_bits=width)) <= 1.05 * bound < len(encode_spikes(flat))


def test_a_silent_chunk_costs_only_its_header():
    for n in (1, 4096, 1 << 20):
        enc = encode_spikes(np.zeros(n, np.uint8))
        assert len(enc) <= 16
        np.testing.assert_array_equal(decode_spikes(enc), np.zeros(n, np.uint8))


@pytest.mark.parametrize("p", [0.5, 0.2, 0.05, 0.01, 0.002])
def test_close_to_the_shannon_bound(p):
    n = 1 << 20
    packed = np.packbits(np.random.default_rng(1).random(n) < p, bitorder="little")
    bound = n * -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) / 8
    assert len(encode_spikes(packed)) <= 1.05 * bound


def test_damaged_chunks_raise():
    enc = bytearray(encode_spikes(np.packbits(np.random.default_rng(2).random(4000) < 0.05,
                                              bitorder="little")))
    with pytest.raises(ValueError):
        decode_spikes(bytes(enc[:5]))
    enc[0] = 9
    with pytest.raises(ValueError, match="version"):
        decode_spikes(bytes(enc))


def test_registered_with_numcodecs():
    codec = numcodecs.get_codec({"id": "spikestore.spikes", "level": 3})
    assert isinstance(codec, SpikeCodec) and codec.get_config() == {"id": "spikestore.spikes", "level": 3}
    with_rows = numcodecs.get_codec({"id": "spikestore.spikes", "level": 1, "row_bits": 28})
    assert with_rows.get_config()["row_bits"] == 28
    data = np.packbits(np.random.default_rng(3).random(999) < 0.1, bitorder="little")
    out = np.empty_like(data)
    codec.decode(codec.encode(data), out=out)
    np.testing.assert_array_equal(out, data)


def test_plain_zarr_decodes_what_spikestore_reads(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "z.zarr"
    g = torch.Generator().manual_seed(0)
    with spikestore.Store(path, chunk_bytes=2000) as store:
        for p in (0.3, 0.05, 0.004, 0.0):
            for _ in range(6):
                store.append("output/l", (torch.rand(16, 100, generator=g) < p).float())
    s = spikestore.open(path)["output/l"]
    want = np.stack([s[i] for i in range(len(s))])
    # A fresh interpreter whose code never imports spikestore: zarr finds the codec by entry point.
    code = ("import sys, zarr, numpy as np\n"
            f"a = zarr.open_array({str(path / 'output/l/seg000000')!r}, mode='r')[:]\n"
            "assert 'spikestore.codecs._spikes' in sys.modules  # loaded by zarr's entry point\n"
            "assert 'torch' not in sys.modules  # and decoding needs no torch\n"
            "import io; buf = io.BytesIO()\n"  # np.save cannot seek in a pipe
            "np.save(buf, np.unpackbits(a, axis=-1, count=100, bitorder='little'))\n"
            "sys.stdout.buffer.write(buf.getvalue())\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    import io

    got = np.load(io.BytesIO(out.stdout), allow_pickle=False)
    np.testing.assert_array_equal(got.astype(np.float32), want)


@pytest.mark.parametrize("row_bits", [None, 28, 13])
@pytest.mark.parametrize("p", [0.005, 0.05, 0.15])
def test_compiled_and_numpy_gap_coders_write_the_same_bytes(monkeypatch, row_bits, p):
    from spikestore.codecs import _packing as packing

    rows = np.random.default_rng(7).random((300, row_bits or 64)) < p
    packed = np.packbits(rows, axis=-1, bitorder="little")
    if row_bits == 13:
        packed[5, -1] |= 0x80  # a set padding bit: both must fall back to numbering every bit
    fast = encode_spikes(packed, 1, row_bits)
    monkeypatch.setattr(packing, "KERNELS", False)
    assert encode_spikes(packed, 1, row_bits) == fast
    np.testing.assert_array_equal(decode_spikes(fast).reshape(packed.shape), packed)


# -- decoders bound their output before allocating it ------------------------------

_HEAD = struct.Struct("<BBQ")  # version, mode, decoded length: the spike codec's header
MiB, GiB = 1 << 20, 1 << 30
FIXTURE_MODES = ["bitmap", "gaps8", "gaps-pcodec", "zeros", "gaps8-rows", "gaps-pcodec-rows", "neurons",
                 "neurons-padded", "neurons-channels"]


def _zstd_rle_bomb(nbytes: int, *, sized: bool = True) -> bytes:
    """A zstd frame of ``nbytes`` zeros made of RLE blocks (4 bytes a 128 KiB block).

    ``sized`` frames declare their content size; the others leave it
    unknown, as streaming compressors do.
    """
    out = bytearray(struct.pack("<I", 0xFD2FB528))
    # Single-segment frame with an 8-byte content size, or a 128 KiB window and no size.
    out += bytes([0xE0]) + struct.pack("<Q", nbytes) if sized else bytes([0x00, 0x38])
    left = nbytes
    while left:
        n = min(1 << 17, left)
        left -= n
        out += (int(left == 0) | 1 << 1 | n << 3).to_bytes(3, "little") + b"\0"
    return bytes(out)


def _traced(fn: Callable[[], object]) -> tuple[BaseException | None, int, float]:
    """What ``fn`` raised (or None), the peak of memory it allocated, and the seconds it took."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        fn()
        exc = None
    except Exception as e:  # noqa: BLE001 - returned: the caller asserts the type
        exc = e
    finally:
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return exc, peak, seconds


def test_the_rle_bomb_is_a_valid_zstd_frame():
    for sized in (True, False):
        assert bytes(Zstd().decode(_zstd_rle_bomb(300_000, sized=sized))) == bytes(300_000)


@pytest.mark.parametrize("mode", [0, 1, 2, 3, 4, 0x81, 0x82])
@pytest.mark.parametrize("with_out", [False, True])
def test_a_header_asking_for_8_gib_is_refused_before_allocating(mode, with_out):
    chunk = _HEAD.pack(1, mode, 8 * GiB) + bytes(8)  # 18 bytes
    out = np.empty(4096, np.uint8) if with_out else None
    exc, peak, seconds = _traced(lambda: decode_spikes(chunk, out))
    assert isinstance(exc, ChecksumError) and "8589934592" in str(exc), repr(exc)
    assert peak < MiB and seconds < 1


def test_without_out_a_header_up_to_the_limit_is_decoded():
    from spikestore.codecs._bounded import MAX_DECODED_BYTES

    assert MAX_DECODED_BYTES == 2**31
    assert decode_spikes(_HEAD.pack(1, 3, 5000)).size == 5000
    with pytest.raises(ChecksumError, match="2147483649"):
        SpikeCodec().decode(_HEAD.pack(1, 3, 2**31 + 1))


@pytest.mark.parametrize("where", ["bitmap", "gaps", "escapes"])
@pytest.mark.parametrize("sized", [True, False])
@pytest.mark.parametrize("with_out", [False, True])
def test_zstd_bombs_are_refused_quickly_in_bounded_memory(where, sized, with_out):
    bomb, n = _zstd_rle_bomb(GiB, sized=sized), 4096
    if where == "bitmap":
        chunk = _HEAD.pack(1, 0, n) + bomb
    elif where == "gaps":
        chunk = _HEAD.pack(1, 1, n) + struct.pack("<QQ", 10, len(bomb)) + bomb
    else:  # one escaped gap, whose escapes decompress to a GiB
        gaps = bytes(Zstd(level=1).encode(np.array([255, 3], np.uint8)))
        chunk = _HEAD.pack(1, 1, n) + struct.pack("<QQ", 2, len(gaps)) + gaps + bomb
    out = np.empty(n, np.uint8) if with_out else None
    exc, peak, seconds = _traced(lambda: decode_spikes(chunk, out))
    assert isinstance(exc, ChecksumError), repr(exc)
    assert peak < 4 * MiB and seconds < 1


def test_a_pcodec_bomb_is_refused_in_bounded_memory():
    from pcodec import ChunkConfig, standalone

    many = standalone.simple_compress(np.zeros(1 << 24, np.uint32), ChunkConfig())  # 16 Mi gaps, ~KiB
    chunk = _HEAD.pack(1, 2, 1000) + many  # 8000 bits hold at most 8000 spikes
    exc, peak, seconds = _traced(lambda: decode_spikes(chunk))
    assert isinstance(exc, ChecksumError) and "gaps" in str(exc), repr(exc)
    assert peak < 4 * MiB and seconds < 1


@pytest.mark.parametrize("tail", ["gap", "escape"])
def test_gaps_pointing_past_the_end_are_damage(tail):
    n = 100  # 800 bits
    if tail == "gap":
        gaps, escapes = np.array([10, 254, 254, 254], np.uint8), b""  # the last spike at bit 775: fine ...
        gaps = np.append(gaps, np.uint8(30))  # ... then one at 806
    else:
        gaps, escapes = np.array([255], np.uint8), bytes(Zstd(level=1).encode(np.array([2**32 - 256], "<u4")))
    zg = bytes(Zstd(level=1).encode(gaps))
    chunk = _HEAD.pack(1, 1, n) + struct.pack("<QQ", gaps.size, len(zg)) + zg + escapes
    with pytest.raises(ChecksumError, match=r"out of range|past"):
        decode_spikes(chunk)


@pytest.mark.parametrize("mode", FIXTURE_MODES)
def test_damaged_spike_chunks_only_raise_spikestore_errors(mode):
    enc = (FIXTURES / f"spikes-{mode}.bin").read_bytes()
    want = np.load(FIXTURES / f"spikes-{mode}.expected.npy").reshape(-1)
    rng = np.random.default_rng(FIXTURE_MODES.index(mode))
    variants = [enc[:k] for k in rng.integers(0, len(enc), 100)] + [enc[:k] for k in range(min(len(enc), 40))]
    for _ in range(200):
        flipped = bytearray(enc)
        flipped[rng.integers(len(enc))] ^= 1 << int(rng.integers(8))
        variants.append(bytes(flipped))
    variants += [enc + bytes(k) for k in (1, 7, 41)]
    for v in variants:
        for out in (None, np.empty(want.size, np.uint8)):
            try:
                got = decode_spikes(v, out)
            except SpikestoreError:
                continue
            # The codec has no checksum of its own (the chunk's CRC-32C is outside): a flip
            # inside zstd literals may decode to other bits, but never to another size than
            # expected (without ``out``, the header's, which a flip may have changed).
            assert got.dtype == np.uint8
            assert got.size == (want.size if out is not None else _HEAD.unpack_from(v)[2])


@pytest.mark.parametrize("mode", FIXTURE_MODES)
def test_a_trailing_identity_frame_is_skipped(mode):
    from spikestore.codecs._identity import FRAME_VERSION, ChunkIdentity

    enc = (FIXTURES / f"spikes-{mode}.bin").read_bytes()
    want = np.load(FIXTURES / f"spikes-{mode}.expected.npy").reshape(-1)
    frame = ChunkIdentity.of({"array": "seg000000"}, "output/x", FRAME_VERSION).frame(3, 7)  # stores written before
    np.testing.assert_array_equal(decode_spikes(enc + frame), want)
    out = np.empty_like(want)
    SpikeCodec().decode(enc + frame, out=out)
    np.testing.assert_array_equal(out, want)


def test_repr_and_config_follow_numcodecs(monkeypatch):
    from numcodecs.tests import common

    monkeypatch.setattr(common, "SpikeCodec", SpikeCodec, raising=False)  # check_repr evaluates there
    common.check_repr("SpikeCodec(level=3, row_bits=10)")
    common.check_repr("SpikeCodec(level=1)")
    for codec in (SpikeCodec(level=3, row_bits=10), SpikeCodec()):
        common.check_config(codec)
        config = codec.get_config()
        assert config.pop("id") == "spikestore.spikes"  # numcodecs takes the id off before from_config
        assert SpikeCodec.from_config(config) == codec
        assert numcodecs.get_codec(codec.get_config()) == codec


_SUMS = {"crc32c": CRC32C(), "fletcher32": Fletcher32()}


@pytest.mark.parametrize("checksum", ["crc32c", "fletcher32"])
@pytest.mark.parametrize("sized", [True, False])
def test_a_chunk_codec_refuses_a_zstd_bomb(checksum, sized):
    codec = ChunkCodec({"id": "zstd", "level": 3, "checksum": checksum})
    data = bytes(_SUMS[checksum].encode(_zstd_rle_bomb(GiB, sized=sized)))  # its checksum is right
    exc, peak, seconds = _traced(lambda: codec.decode(data, (1024,), np.float32))
    assert isinstance(exc, ChecksumError), repr(exc)
    assert peak < 4 * MiB + 4096 and seconds < 1


@pytest.mark.parametrize("config", [{"id": "zstd", "level": 3}, {"id": "spikestore.spikes", "level": 1},
                                    {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "bitshuffle",
                                     "typesize": 4}])
@pytest.mark.parametrize("size", [100, 8192])
def test_a_chunk_that_decodes_to_another_size_is_damage(config, size):
    # A well-formed chunk of 100 (or 8192) bytes where the document expects 4096:
    # the rest of the output buffer must never be handed out uninitialised.
    codec = ChunkCodec(config)
    data = codec.encode(np.ones(size, np.uint8))
    with pytest.raises(ChecksumError, match=f"{size}.*4096|4096.*{size}"):
        codec.decode(data, (1024,), np.float32)


def test_a_blosc_header_that_overstates_its_bytes_is_damage():
    codec = ChunkCodec({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "bitshuffle", "typesize": 4})
    raw = bytearray(Blosc(cname="lz4", clevel=5, shuffle=2).encode(np.arange(1024, dtype=np.float32)))
    struct.pack_into("<I", raw, 12, len(raw) + 1000)  # cbytes: blosc would read past the buffer
    with pytest.raises(ChecksumError, match="bytes"):
        codec.decode(bytes(CRC32C().encode(bytes(raw))), (1024,), np.float32)


@pytest.mark.parametrize("config", [{"id": "spikestore.spikes", "level": 1, "row_bits": 28},
                                    {"id": "zstd", "level": 1, "checksum": "fletcher32"},
                                    {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "bitshuffle",
                                     "typesize": 1}])
def test_damaged_chunks_with_their_checksum_decode_exactly_or_not_at_all(config):
    from spikestore.codecs._identity import ChunkIdentity

    want = np.packbits(np.random.default_rng(5).random((50, 28)) < 0.05, axis=-1, bitorder="little")
    identity = ChunkIdentity.of({"array": "seg000000"}, "output/x", rows=50, chunk_records=50)
    codec = ChunkCodec(config)
    enc = codec.encode(want)
    identity = dataclasses.replace(identity, tags=(identity.chunk_tag(0, 50, enc),))
    np.testing.assert_array_equal(codec.decode(enc, want.shape, np.uint8, identity=identity), want)
    rng = np.random.default_rng(6)
    variants = [enc[:k] for k in range(len(enc))]
    for _ in range(300):
        flipped = bytearray(enc)
        flipped[rng.integers(len(enc))] ^= 1 << int(rng.integers(8))
        variants.append(bytes(flipped))
    for v in variants:
        try:
            got = codec.decode(v, want.shape, np.uint8, identity=identity)
        except ChecksumError:
            continue
        np.testing.assert_array_equal(got, want)
