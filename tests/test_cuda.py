"""The CUDA capture path on a real device; every test is skipped without CUDA.

``bash tools/gpu_check.sh`` runs them on a GPU machine, with the sync count and
the benchmark. The logic that needs no device is tested in tests/test_cuda_path.py.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import writer_held
from parity import MONITORS, data_files, make_monitor, mixed_records, same_record, tutorial_net, write_records
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from spikingjelly.activation_based import monitor as sj
from torch import nn

import spikestore
from spikestore import monitor as ss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ALL_KINDS = [("OutputMonitor", (), {}), ("InputMonitor", (), {}), ("AttributeMonitor", ("v", False), {}),
             ("GradInputMonitor", (), {}), ("GradOutputMonitor", (), {})]


def cuda_steps(net: nn.Module, step_mode: str, steps: int, store: spikestore.Store | None = None) -> None:
    """tests/helpers.run_steps on CUDA: the same inputs (made on the CPU), forward, backward."""
    g = torch.Generator().manual_seed(3)
    for step in range(steps):
        if store is not None:
            store.set_step(step)
        x = torch.rand(4, 2, 8, generator=g).cuda()
        out = net(x) if step_mode == "m" else torch.stack([net(xt) for xt in x])
        out.sum().backward()
        functional.reset_net(net)


@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("cls,args,kwargs", MONITORS, ids=[f"{m[0]}{i}" for i, m in enumerate(MONITORS)])
def test_parity_with_spikingjelly_on_cuda(tmp_path, step_mode, cls, args, kwargs):
    net = tutorial_net(neuron.LIFNode, step_mode).cuda()
    ref = make_monitor(sj, cls, args, kwargs, net, neuron.LIFNode)
    store = spikestore.Store(tmp_path / "cuda.zarr")
    disk = make_monitor(ss, cls, args, kwargs, net, neuron.LIFNode, store=store)
    cuda_steps(net, step_mode, 3, store)
    n = len(ref.records)
    assert n == (3 if step_mode == "m" else 12) * 2
    assert disk.monitored_layers == ref.monitored_layers
    assert len(disk.records) == n
    for i in range(n):
        assert same_record(ref.records[i], disk.records[i]), i
    store.close()
    run = spikestore.open(tmp_path / "cuda.zarr")
    for name in ("1", "3"):
        s = run[f"{disk.quantity}/{name}"]
        records = [r for r in ref[name] if r is not None]
        assert len(s) == len(records)
        for i, r in enumerate(records):
            want = r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
            np.testing.assert_array_equal(s[i], want)


def reference_net() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 8, 3, padding=1), layer.BatchNorm2d(8),
                        neuron.LIFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2),
                        layer.Flatten(), layer.Linear(8 * 14 * 14, 10),
                        neuron.LIFNode(surrogate_function=surrogate.ATan()))
    functional.set_step_mode(net, "m")
    net = net.cuda()
    return net, torch.optim.Adam(net.parameters(), lr=1e-3)


def train_step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = net(x)
    loss = F.cross_entropy(out.mean(0), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    functional.reset_net(net)
    return loss.detach()


def test_whole_training_steps_never_synchronise_with_every_monitor_kind_streaming(tmp_path):
    net, opt = reference_net()
    g = torch.Generator().manual_seed(0)
    batches = [((torch.rand(4, 16, 1, 28, 28, generator=g) < 0.5).float().cuda(),
                torch.randint(0, 10, (16,), generator=g).cuda()) for _ in range(4)]
    refs = [make_monitor(sj, c, a, k, net, neuron.LIFNode) for c, a, k in ALL_KINDS]
    with spikestore.Store(tmp_path / "sync.zarr") as store:
        mons = [make_monitor(ss, c, a, k, net, neuron.LIFNode, store=store) for c, a, k in ALL_KINDS]
        for step in range(3):  # warm-up: first-call allocations, kernels, the pool's buffers
            store.set_step(step)
            train_step(net, opt, *batches[step % 4])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(3, 23):
                store.set_step(step)
                train_step(net, opt, *batches[step % 4])
        finally:
            torch.cuda.set_sync_debug_mode(0)
        for ref, mon in zip(refs, mons, strict=True):
            assert len(ref.records) == len(mon.records) == 23 * 2
            assert all(same_record(a, b) for a, b in zip(ref.records, list(mon.records), strict=True))


def test_hooks_never_synchronise_in_inference(tmp_path):
    net = tutorial_net(neuron.LIFNode, "m").cuda()
    ref = sj.OutputMonitor(net, neuron.LIFNode)
    with spikestore.Store(tmp_path / "cuda.zarr") as store:
        mon = ss.OutputMonitor(net, neuron.LIFNode, store=store)
        x = torch.rand(4, 2, 8, device="cuda")
        with torch.no_grad():  # warm-up: first-call allocations, kernel selection, the side streams, the pool
            store.set_step(0)
            net(x)
            functional.reset_net(net)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.no_grad():
                for step in range(1, 4):
                    store.set_step(step)
                    net(x)
                    functional.reset_net(net)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert all(torch.equal(a.cpu(), b) for a, b in zip(ref.records, list(mon.records), strict=True))


def test_a_store_recorded_on_cuda_is_byte_identical_to_the_cpu_ones(tmp_path):
    records = mixed_records()
    write_records(tmp_path / "cpu.zarr", records, "cpu")
    write_records(tmp_path / "cuda.zarr", records, "cuda")
    cpu, cuda = data_files(tmp_path / "cpu.zarr"), data_files(tmp_path / "cuda.zarr")
    assert sorted(cpu) == sorted(cuda)
    assert [k for k in cpu if cpu[k] != cuda[k]] == []
    run = spikestore.open(tmp_path / "cuda.zarr")
    assert run["output/bf16"][0].dtype == ml_dtypes.bfloat16  # bfloat16 stays bfloat16 on disk
    assert run["output/f32"].segments[0].encoding == "bits"


def test_the_pinned_pool_is_reused_and_stays_within_the_queue_budget(tmp_path):
    budget = 4 << 20
    with spikestore.Store(tmp_path / "pool.zarr", max_pending_bytes=budget) as store:
        pool = store.pinned_pool
        spikes = (torch.rand(8, 64, 4096, device="cuda") < 0.2).float()  # 8 MiB float32, 256 KiB packed
        for step in range(300):
            store.set_step(step)
            store.append("output/big", spikes)
            store.append("v/small", torch.randn(1000, device="cuda"))
            assert pool.allocated_bytes <= budget
        store.flush()
        assert pool.in_use_bytes == 0
        assert pool.allocations <= budget // (256 << 10) + 2
        assert pool.reuses >= 600 - pool.allocations
    s = spikestore.open(tmp_path / "pool.zarr")["output/big"]
    assert len(s) == 300
    np.testing.assert_array_equal(s[299], spikes.cpu().numpy())


def test_a_full_pool_drops_and_counts_with_on_full_drop(tmp_path):
    with spikestore.Store(tmp_path / "drop.zarr", max_pending_bytes=1 << 20, on_full="drop") as store:
        with writer_held(store):
            x = (torch.rand(64, 1 << 16, device="cuda") < 0.5).float()  # 512 KiB packed: a 1 MiB buffer
            with pytest.warns(Warning):
                kept = [store.append("output/x", x) for _ in range(5)]
            assert kept == [0, None, None, None, None]  # the writer holds the only buffer the budget allows
            assert store.dropped == 4 and store.pinned_pool.allocated_bytes <= 1 << 20
        store.flush()
    assert len(spikestore.open(tmp_path / "drop.zarr")["output/x"]) == 1


def test_records_that_are_not_binary_are_never_lost(tmp_path):
    with spikestore.Store(tmp_path / "nb.zarr") as store:
        v = torch.randn(4, 2, 33, device="cuda")
        store.append("v_seq/1", v)
        store.append("v_seq/1", v * 2)
        store.flush()
        assert "v_seq/1" in store._device.raw_streams  # the second record was copied raw at once
    s = spikestore.open(tmp_path / "nb.zarr")["v_seq/1"]
    np.testing.assert_array_equal(s[0], v.cpu().numpy())
    np.testing.assert_array_equal(s[1], (v * 2).cpu().numpy())
    store = spikestore.Store(tmp_path / "bits.zarr")
    store.append("output/1", torch.full((16,), 0.5, device="cuda"), encoding="bits")
    with pytest.raises(spikestore.WriterError, match="output/1"):
        store.close()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_outputs_are_recorded_in_their_dtype(tmp_path, dtype):
    net, _ = reference_net()
    ref = sj.OutputMonitor(net, neuron.LIFNode)
    x = (torch.rand(4, 8, 1, 28, 28, device="cuda") < 0.5).float()
    with spikestore.Store(tmp_path / "amp.zarr") as store:
        mon = ss.OutputMonitor(net, neuron.LIFNode, store=store)
        with torch.autocast("cuda", dtype=dtype):
            for step in range(3):
                store.set_step(step)
                net(x)
                functional.reset_net(net)
        assert {r.dtype for r in ref.records} == {dtype}
        assert all(same_record(a, b) for a, b in zip(ref.records, list(mon.records), strict=True))
    run = spikestore.open(tmp_path / "amp.zarr")
    want = ml_dtypes.bfloat16 if dtype == torch.bfloat16 else np.float16
    assert run["output/2"][0].dtype == want
    assert run["output/2"].segments[0].encoding == "bits"
