"""The spike codec: exact round trips, fixed bytes, registration for numcodecs and zarr."""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spikestore
from spikestore.codecs._spikes import MODES, SpikeCodec, decode_spikes, encode_spikes

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


@pytest.mark.parametrize("mode", [*MODES, "gaps8-rows", "gaps-pcodec-rows"])
def test_committed_fixtures_still_decode(mode):
    enc = (FIXTURES / f"spikes-{mode}.bin").read_bytes()
    assert MODES[enc[1] & 0x7F] + ("-rows" if enc[1] & 0x80 else "") == mode
    want = np.load(FIXTURES / f"spikes-{mode}.expected.npy", allow_pickle=False)
    np.testing.assert_array_equal(decode_spikes(enc), want)
    rows = FIXTURES / f"spikes-{mode}.row_bits"
    row_bits = int(rows.read_text()) if rows.exists() else None
    # Today's encoder may produce other bytes (a zstd or pcodec upgrade), but no larger ones.
    again = encode_spikes(want, row_bits=row_bits)
    np.testing.assert_array_equal(decode_spikes(again), want)
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
    assert len(encode_spikes(packed, row_bits=width)) <= 1.05 * bound < len(encode_spikes(packed))


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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
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
