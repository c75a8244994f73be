"""The compiled write-path kernels against numpy's own packing and bit search."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikestore.codecs import _gap_kernels as G
from spikestore.codecs import _kernels as K


def _pack(x: np.ndarray) -> tuple[bool, np.ndarray]:
    n = x.shape[-1]
    size = x.size // n * ((n + 7) // 8)
    out = np.full(size + 8, 0xAB, dtype=np.uint8)  # stale bytes must not leak into the result
    ok = K.pack_f32(np.ascontiguousarray(x).reshape(-1).view(np.uint32), n, out)
    return ok, out[:size]


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 40), row_len=st.integers(1, 140), p=st.sampled_from([0.0, 0.02, 0.3, 1.0]),
       seed=st.integers(0, 2**32 - 1))
def test_pack_f32_matches_numpy_packbits(rows: int, row_len: int, p: float, seed: int) -> None:
    x = (np.random.default_rng(seed).random((rows, row_len)) < p).astype(np.float32)
    ok, packed = _pack(x)
    assert ok
    ref = np.packbits(x.astype(bool), axis=-1, bitorder="little").reshape(-1)
    np.testing.assert_array_equal(packed, ref)


@pytest.mark.parametrize("row_len", [7, 28, 32, 57, 100, 256])
def test_pack_f32_matches_numpy_on_records_of_several_check_blocks(row_len: int) -> None:
    rows = 3 * 32 * K._CHECK_WORDS // row_len + 3  # the verdict is looked at every _CHECK_WORDS words
    x = (np.random.default_rng(row_len).random((rows, row_len)) < 0.05).astype(np.float32)
    ok, packed = _pack(x)
    assert ok
    np.testing.assert_array_equal(packed, np.packbits(x.astype(bool), axis=-1, bitorder="little").reshape(-1))


@pytest.mark.parametrize("bad", [2.0, -0.0, np.nan, np.inf, 0.5, 1.0000001, -1.0, 1e-45])
@pytest.mark.parametrize("where", ["first", "middle", "tail"])
def test_pack_f32_refuses_any_non_binary_value(bad: float, where: str) -> None:
    x = (np.random.default_rng(1).random(32 * 300 + 5) < 0.1).astype(np.float32)
    i = {"first": 0, "middle": 32 * 150 + 7, "tail": x.size - 2}[where]
    x[i] = bad
    ok, _ = _pack(x)
    assert not ok


@pytest.mark.parametrize("row_len", [1, 7, 28, 31])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_pack_f32_refuses_a_non_binary_value_in_short_rows(row_len: int, where: str) -> None:
    # Rows under 32 values are cut from a register inside the packing loop: its check must still see every value.
    rows = 32 * 3 * K._CHECK_WORDS // row_len + 1  # several check blocks, and a tail of fewer than 32 values
    x = (np.random.default_rng(row_len).random((rows, row_len)) < 0.2).astype(np.float32)
    assert x.size % 32
    flat = x.reshape(-1)
    flat[{"first": 0, "middle": flat.size // 2, "last": flat.size - 1}[where]] = 0.5
    ok, _ = _pack(x)
    assert not ok


@pytest.mark.parametrize("bad", [0x3F800001, 0x3F000000, 0x80000000, 0xBF800000, 0x00000001, 0x7FC00000])
def test_pack_f32_refuses_a_non_binary_value_in_every_lane_of_a_word(bad: int) -> None:
    # The 32 values of a word are compared together: a stray value in any lane must count.
    x = (np.random.default_rng(bad).random(32 * 70) < 0.5).astype(np.float32)
    for lane in range(32):
        y = x.copy()
        y.view(np.uint32)[32 * 69 + lane] = bad
        ok, _ = _pack(y)
        assert not ok, lane


@settings(max_examples=150, deadline=None)
@given(n_bytes=st.integers(0, 5000), p=st.sampled_from([0.0, 0.001, 0.05, 0.2, 0.9]),
       seed=st.integers(0, 2**32 - 1))
def test_popcount_and_gaps_match_unpackbits(n_bytes: int, p: float, seed: int) -> None:
    bits = np.random.default_rng(seed).random(8 * n_bytes) < p
    b = np.packbits(bits, bitorder="little")
    assert K.popcount(b) == bits.sum()
    ones = int(bits.sum())
    small, esc = np.empty(ones, np.uint8), np.empty(ones, np.int64)
    k, e = G.gaps8(b, 8, 8, small, esc)
    gaps = np.diff(np.flatnonzero(bits), prepend=-1) - 1
    assert k == ones
    np.testing.assert_array_equal(small, np.minimum(gaps, 255))
    np.testing.assert_array_equal(esc[:e], gaps[gaps >= 255] - 255)


@pytest.mark.parametrize("row_bits", [1, 7, 13, 28, 63, 100])
@pytest.mark.parametrize("p", [0.05, 0.002])  # (0.2%: gaps of 255 and more, escaped)
def test_gaps_skip_row_padding(row_bits: int, p: float) -> None:
    rng = np.random.default_rng(row_bits)
    real = rng.random((2049, row_bits)) < p
    b = np.packbits(real, axis=-1, bitorder="little").reshape(-1)
    span = 8 * ((row_bits + 7) // 8)
    ones = int(real.sum())
    small, esc = np.empty(ones, np.uint8), np.empty(ones, np.int64)
    k, e = G.gaps8(b, span, row_bits, small, esc)
    gaps = np.diff(np.flatnonzero(real.reshape(-1)), prepend=-1) - 1  # logical numbering
    assert k == ones
    np.testing.assert_array_equal(small, np.minimum(gaps, 255))
    np.testing.assert_array_equal(esc[:e], gaps[gaps >= 255] - 255)


@pytest.mark.parametrize("row_bits", [3, 12, 28, 60])
@pytest.mark.parametrize("rows", [1, 3, 257])
def test_gaps_of_tiled_rows_check_padding_up_to_the_last_partial_word(row_bits: int, rows: int) -> None:
    # Rows of 8/16/32/64 bits are read a word at a time; an odd number of
    # them ends the chunk in a partial word, whose padding counts too.
    real = np.random.default_rng(rows).random((rows, row_bits)) < 0.2
    b = np.packbits(real, axis=-1, bitorder="little").reshape(-1)
    span = 8 * ((row_bits + 7) // 8)
    ones = int(real.sum())
    small, esc = np.empty(ones + 1, np.uint8), np.empty(ones + 1, np.int64)
    k, _e = G.gaps8(b, span, row_bits, small, esc)
    gaps = np.diff(np.flatnonzero(real.reshape(-1)), prepend=-1) - 1
    assert k == ones
    np.testing.assert_array_equal(small[:k], np.minimum(gaps, 255))
    b[-1] |= np.uint8(0x80)  # the last bit of the last row is padding
    assert G.gaps8(b, span, row_bits, small, esc)[0] == -1


def test_gaps_report_a_spike_in_row_padding() -> None:
    b = np.zeros(40, dtype=np.uint8)
    b[3] = 0x80  # bit 31 of the first 32-bit row: padding for 28-bit rows
    small, esc = np.empty(1, np.uint8), np.empty(1, np.int64)
    assert G.gaps8(b, 32, 28, small, esc)[0] == -1
    assert G.gaps8(b, 8, 8, small, esc) == (1, 0)


def test_kernels_accept_read_only_input() -> None:
    b = np.frombuffer(bytes([1, 0, 0, 0, 0, 0, 0, 0, 0x80]), dtype=np.uint8)
    small, esc = np.empty(2, np.uint8), np.empty(2, np.int64)
    assert K.popcount(b) == 2
    assert G.gaps8(b, 8, 8, small, esc) == (2, 0)
    assert small.tolist() == [0, 70]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="compiles for baseline x86-64")
def test_kernels_compiled_for_a_baseline_x86_64_cpu(tmp_path) -> None:
    # Rows of 57-63 real bits span whole 64-bit words; their padding mask once
    # came from 1 << 64, undefined in LLVM: right with BMI2's bzhi, zero on a
    # baseline x86-64 build. Compile the kernels for the baseline CPU (SSE2, no
    # AVX) to check that, and that the packing kernel still packs and refuses.
    code = (
        "import numpy as np\n"
        "from spikestore.codecs import _gap_kernels as G, _kernels as K\n"
        "b = np.zeros(40, np.uint8); b[0] = 1; b[-1] = 0x80\n"  # a spike, then one in the padding
        "s, e = np.empty(9, np.uint8), np.empty(9, np.int64)\n"
        "print(G.gaps8(b, 64, 60, s, e))\n"
        # and the packing kernel, whose compare LLVM vectorizes for the CPU it compiles for
        "x = (np.random.default_rng(0).random((300, 28)) < 0.3).astype(np.float32)\n"
        "out = np.empty(300 * 4 + 8, np.uint8)\n"
        "ok = K.pack_f32(x.reshape(-1).view(np.uint32), 28, out)\n"
        "ref = np.packbits(x.astype(bool), axis=-1, bitorder='little').reshape(-1)\n"
        "x[150, 3] = 0.5\n"
        "print(ok and (out[:1200] == ref).all(), K.pack_f32(x.reshape(-1).view(np.uint32), 28, out))\n"
    )
    env = dict(os.environ, NUMBA_CPU_NAME="x86-64", NUMBA_CPU_FEATURES="", NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["(-1, 0)", "True False"]
