from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from spikestore.codecs._packing import pack_if_binary, pack_torch, unpack_bits

DTYPES = ["bool", "uint8", "int16", "int32", "int64", "float16", "float32", "float64"]


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES),
       shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=19),
       data=st.data())
def test_binary_records_pack_like_numpy_little_bit_order(dtype, shape, data):
    mask = data.draw(hnp.arrays(np.bool_, shape))
    x = mask.astype(dtype)
    packed = pack_if_binary(x)
    assert packed is not None
    np.testing.assert_array_equal(packed, np.packbits(mask, axis=-1, bitorder="little"))
    back = unpack_bits(packed, shape[-1], dtype)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("values", [[0.0, 0.5], [0.0, -0.0], [1.0, np.nan], [2.0, 0.0], [1.0, -1.0]])
def test_non_binary_float_records_are_not_packed(values):
    for dtype in ("float16", "float32", "float64"):
        assert pack_if_binary(np.array(values * 200, dtype=dtype)) is None


def test_non_binary_ints_and_trivial_shapes_are_not_packed():
    assert pack_if_binary(np.array([0, 1, 2] * 100)) is None
    assert pack_if_binary(np.array(1.0, dtype=np.float32)) is None  # 0-d
    assert pack_if_binary(np.zeros((3, 0), dtype=np.float32)) is None  # empty


def test_late_non_binary_value_is_caught_after_the_sample():
    x = np.zeros(10_000, dtype=np.float32)
    x[-1] = 0.25
    assert pack_if_binary(x) is None


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float16, torch.bfloat16,
                                   torch.float32, torch.float64])
def test_torch_packing_matches_numpy(dtype):
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(3, 5, 13, generator=g) < 0.3
    packed, ok = pack_torch(mask.to(dtype))
    assert bool(ok)
    np.testing.assert_array_equal(packed.numpy(), np.packbits(mask.numpy(), axis=-1, bitorder="little"))
    bad = mask.to(dtype).clone()
    if dtype != torch.bool:
        bad[0, 0, 0] = 2
        assert not bool(pack_torch(bad)[1])


@pytest.mark.parametrize("shape", [(3, 28), (5, 64), (2, 3, 13), (7,)])
def test_numpy_fallback_packs_float32_like_the_compiled_kernel(monkeypatch, shape):
    """Big-endian hosts take the numpy path: it must agree with the kernel, binary or not."""
    from spikestore.codecs import _packing as packing

    x = (np.random.default_rng(3).random(shape) < 0.3).astype(np.float32)
    fast = pack_if_binary(x).copy()
    y = x.copy()
    y.reshape(-1)[-1] = 0.5
    monkeypatch.setattr(packing, "KERNELS", False)
    np.testing.assert_array_equal(pack_if_binary(x), fast)
    assert pack_if_binary(y) is None


def test_store_round_trip_without_compiled_kernels(monkeypatch, tmp_path):
    """With the kernels off, the writer packs what the hook no longer does."""
    import spikestore
    from spikestore.codecs import _packing as packing

    monkeypatch.setattr(packing, "KERNELS", False)
    x = (torch.rand(4, 3, 28) < 0.05).float()
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/l", x)
        store.append("v/l", x + 0.5)
    run = spikestore.open(tmp_path / "s.zarr")
    assert run["output/l"].segments[0].encoding == "bits"
    np.testing.assert_array_equal(run["output/l"][0], x.numpy())
    np.testing.assert_array_equal(run["v/l"][0], (x + 0.5).numpy())


def _unloaded_kernels(monkeypatch, warm_up):
    """Make the kernels count as not loaded yet, with ``warm_up`` as what loads them."""
    from spikestore.codecs import _kernels
    from spikestore.codecs import _packing as packing

    monkeypatch.setattr(packing, "_kernel_state", "unloaded")
    monkeypatch.setattr(_kernels, "warm_up", warm_up)
    return packing


def test_a_store_loads_the_kernels_when_it_opens_not_at_the_first_record(monkeypatch, tmp_path):
    """Loading takes ~1 s (~15 s to compile on a fresh install): Store() pays it, not a hook in the training loop."""
    import threading

    import spikestore
    from spikestore.codecs import _kernels

    loads: list[threading.Thread] = []
    real = _kernels.warm_up
    packing = _unloaded_kernels(monkeypatch, lambda: (loads.append(threading.current_thread()), real()))
    store = spikestore.Store(tmp_path / "s.zarr")
    assert loads == [threading.current_thread()]
    assert packing.kernels_ready()
    x = (torch.rand(4, 16, 28) < 0.05).float()
    with store:
        store.append("output/l", x)
    with spikestore.Store(tmp_path / "t.zarr") as again:  # once per process
        again.append("output/l", x)
    assert len(loads) == 1
    np.testing.assert_array_equal(spikestore.open(tmp_path / "s.zarr")["output/l"][0], x.numpy())


def test_a_failed_kernel_load_warns_once_and_numpy_does_the_work(monkeypatch, tmp_path):
    import spikestore

    def broken() -> None:
        raise OSError("libllvmlite.so: cannot open shared object file")

    packing = _unloaded_kernels(monkeypatch, broken)
    x = (torch.rand(2, 3, 40) < 0.3).float()
    with pytest.warns(RuntimeWarning, match="could not load its compiled kernels.*libllvmlite"):
        store = spikestore.Store(tmp_path / "s.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # once: not again for later records or stores
        assert not packing.kernels_ready()
        with store:
            store.append("output/l", x)
        spikestore.Store(tmp_path / "t.zarr").close()
    run = spikestore.open(tmp_path / "s.zarr")
    assert run["output/l"].segments[0].encoding == "bits"
    np.testing.assert_array_equal(run["output/l"][0], x.numpy())
