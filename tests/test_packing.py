from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from spikestore.packing import pack_if_binary, pack_torch, unpack_bits

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
    from spikestore import packing

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
    from spikestore import packing

    monkeypatch.setattr(packing, "KERNELS", False)
    x = (torch.rand(4, 3, 28) < 0.05).float()
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/l", x)
        store.append("v/l", x + 0.5)
    run = spikestore.open(tmp_path / "s.zarr")
    assert run["output/l"].segments[0].encoding == "bits"
    np.testing.assert_array_equal(run["output/l"][0], x.numpy())
    np.testing.assert_array_equal(run["v/l"][0], (x + 0.5).numpy())


def _loading_kernels(monkeypatch, warm_up):
    """Make the next ``load_kernels`` start afresh, running ``warm_up`` as its loader."""
    import threading

    from spikestore import _kernels, packing

    monkeypatch.setattr(packing, "_ready", threading.Event())
    monkeypatch.setattr(packing, "_loader", None)
    monkeypatch.setattr(_kernels, "warm_up", warm_up)
    return packing


def test_records_do_not_wait_for_the_kernels_to_load(monkeypatch, tmp_path):
    """Loading the kernels takes seconds on a fresh install; meanwhile numpy packs and codes.

    The loader here blocks until the records are written and read back, so
    a record that waited for it would hang the test (and the safety timer
    would then fail the final assertion).
    """
    import threading

    import spikestore
    from spikestore import _kernels

    release = threading.Event()
    safety = threading.Timer(60, release.set)
    packing = _loading_kernels(monkeypatch, lambda: release.wait())

    def compiled(*args, **kwargs):
        raise AssertionError("a compiled kernel was called before it was loaded")

    for name in ("pack_f32", "gaps8", "popcount"):
        monkeypatch.setattr(_kernels, name, compiled)
    x = (torch.rand(4, 16, 28) < 0.05).float()
    safety.start()
    try:
        with spikestore.Store(tmp_path / "s.zarr") as store:
            for step in range(3):
                store.set_step(step)
                store.append("output/l", x * (step % 2))
        run = spikestore.open(tmp_path / "s.zarr")
        assert run["output/l"].segments[0].encoding == "bits"
        for step in range(3):
            np.testing.assert_array_equal(run["output/l"][step], (x * (step % 2)).numpy())
        assert not packing.kernels_ready()
        assert not release.is_set(), "the records waited for the kernels"
    finally:
        release.set()
        safety.cancel()
        packing._loader.join()
    assert packing.kernels_ready()


def test_a_failed_kernel_load_warns_and_numpy_does_the_work(monkeypatch, tmp_path):
    import spikestore

    def broken() -> None:
        raise OSError("libllvmlite.so: cannot open shared object file")

    packing = _loading_kernels(monkeypatch, broken)
    with pytest.warns(RuntimeWarning, match="could not load its compiled kernels.*libllvmlite"):
        assert packing.load_kernels(wait=True) is False
    x = (torch.rand(2, 3, 40) < 0.3).float()
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/l", x)
    run = spikestore.open(tmp_path / "s.zarr")
    assert run["output/l"].segments[0].encoding == "bits"
    np.testing.assert_array_equal(run["output/l"][0], x.numpy())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_a_child_forked_while_the_kernels_load_loads_its_own(monkeypatch):
    """A fork copies no threads: the child must not wait forever on the parent's unfinished loader."""
    import multiprocessing
    import threading

    from spikestore import packing

    finished = threading.Thread(target=lambda: None)  # a loader whose thread the child does not have
    finished.start()
    finished.join()
    monkeypatch.setattr(packing, "_ready", threading.Event())
    monkeypatch.setattr(packing, "_loader", finished)
    assert packing.load_kernels(wait=True) is False  # in this process: still "loading"
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(packing.load_kernels, kwds={"wait": True}) is True
