"""The NPZ export: spikes compact, every value back exactly with the dtype the store reports, numpy alone.

Spike records (stored with the ``bits`` encoding) are written as deflated
``bool`` and every records member ``a`` has ``a.dtype``, the store's dtype
name, so ``z[a].astype(...)`` restores the store's values. A run of
several ranks is checked the same way in tests/test_export_ranks.py.
"""

from __future__ import annotations

from collections import Counter

import ml_dtypes
import numpy as np
import pytest
import torch

import spikestore
from spikestore.export import to_npz

T = 4


def as_dtype(name: str) -> np.dtype:
    """The numpy dtype named by an ``.dtype`` member (bfloat16 comes from ml_dtypes, as the store's does)."""
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Spikes of three dtypes (one with a short last batch), float32, bfloat16 and int values; small chunks."""
    path = tmp_path_factory.mktemp("npz") / "run.zarr"
    g = torch.Generator().manual_seed(3)
    with spikestore.Store(path, chunk_bytes=48) as st:  # (a few records a chunk)
        for step in range(10):
            st.set_step(step)
            n = 2 if step == 9 else 3
            st.append("output/lif", (torch.rand(T, n, 5, generator=g) < 0.3).float())
            st.append("output/b", torch.rand(T, 3, 7, generator=g) < 0.2)
            st.append("output/h", (torch.rand(T, 3, 6, generator=g) < 0.4).to(torch.bfloat16))
            st.append("v_seq/lif", torch.randn(T, n, 5, generator=g))
            st.append("v/h", torch.randn(3, 6, generator=g).to(torch.bfloat16))
            st.append("count/x", torch.randint(0, 9, (4,), generator=g))
    return path


SPIKES = ("output/lif", "output/b", "output/h")


def exported_records(z, key):
    """The records of ``key`` in ``z``, one by one, cast to the dtype its ``.dtype`` member names."""
    several = key + ".segment" in z.files
    numbers = z[key + ".segment"].tolist() if several else [0] * len(z[key + ".steps"])
    arrays, taken, out = {}, Counter(), []
    for p in numbers:
        name = f"{key}@{p}" if several else key
        if name not in arrays:
            arrays[name] = z[name].astype(as_dtype(str(z[name + ".dtype"])))
        out.append(arrays[name][taken[name]])
        taken[name] += 1
    return out


@pytest.mark.parametrize("steps", [None, "3:10", "8:"])
def test_every_value_back_with_the_store_s_dtype(store, tmp_path, steps):
    run = spikestore.open(store)
    assert all(seg.encoding == "bits" for key in SPIKES for seg in run[key].segments)
    assert run["v_seq/lif"].segments[0].encoding == "raw"
    assert len(run["output/lif"].segments) == 2 and run["output/lif"].segments[0].nchunks > 1  # (short last batch)
    z = np.load(to_npz(store, tmp_path / "x.npz", steps=steps), allow_pickle=False)
    lo = 0 if steps is None else int(steps.split(":")[0])
    for key in run.streams:
        s = run[key]
        want = [(int(s.steps[i]), int(s.calls[i]), s[i]) for i in range(len(s)) if s.steps[i] >= lo]
        got = exported_records(z, key)
        assert list(zip(z[key + ".steps"].tolist(), z[key + ".calls"].tolist(), strict=True)) == \
            [w[:2] for w in want]
        assert len(got) == len(want) > 0
        for g, (_, _, w) in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert g.tobytes() == w.tobytes()  # bit-exact
    for key in SPIKES:
        for name in (n for n in z.files if (n == key or n.startswith(key + "@")) and "." not in n[len(key):]):
            assert z[name].dtype == bool
    assert z["v/h"].dtype == np.float32 and str(z["v/h.dtype"]) == "bfloat16"  # (numpy has no bfloat16)
    assert z["count/x"].dtype == np.int64 and str(z["count/x.dtype"]) == "int64"


def test_every_member_loads_with_numpy_alone_and_no_pickle(store, tmp_path):
    out = to_npz(store, tmp_path / "x.npz")
    with np.load(out, allow_pickle=False) as z:
        for name in z.files:
            a = z[name]
            assert a.dtype != object
            if name.endswith(".dtype"):
                assert a.shape == () and a.dtype.kind == "U"
        assert z["output/lif@0"].shape == (9, T, 3, 5) and z["output/lif@1"].shape == (1, T, 2, 5)
        assert str(z["output/lif@1.dtype"]) == "float32" and str(z["output/b.dtype"]) == "bool"


def test_spikes_of_a_recorded_network_take_at_most_4x_the_store_s_bytes(tmp_path):
    """Spikes of a SpikingJelly network are deflated bool: a few times the store's bit-packed chunks, where float32
    values would take 32 bits each."""
    from spikingjelly.activation_based import functional, layer, neuron

    from spikestore import monitor

    torch.manual_seed(0)
    net = torch.nn.Sequential(layer.Linear(64, 96), neuron.LIFNode(), layer.Linear(96, 10), neuron.LIFNode())
    functional.set_step_mode(net, "m")
    path = tmp_path / "net.zarr"
    with spikestore.Store(path) as st, monitor.OutputMonitor(net, neuron.LIFNode, store=st):
        for _ in range(6):
            net(torch.rand(8, 16, 64) * 4)
            functional.reset_net(net)
    run = spikestore.open(path)
    spikes = [k for k in run.streams if k.startswith("output/")]
    stored = sum(seg.nbytes() for k in spikes for seg in run[k].segments)
    values = sum(len(run[k]) * run[k].segments[0].values_per_record for k in spikes)
    assert all(seg.encoding == "bits" for k in spikes for seg in run[k].segments)
    rate = sum(float(run[k][:].sum()) for k in spikes) / values
    assert 0.02 < rate < 0.5  # (a network that fires)
    out = to_npz(path, tmp_path / "s.npz", streams=["output/*"])
    assert out.stat().st_size <= 4 * stored
    assert 4 * values > 10 * stored  # (float32 values: far more than 4x)
    z = np.load(out, allow_pickle=False)
    for k in spikes:
        np.testing.assert_array_equal(z[k].astype(str(z[k + ".dtype"])), run[k][:])
