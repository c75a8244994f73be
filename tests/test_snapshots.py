"""Monitors store what the hook saw, whatever user code does to the tensors afterwards.

Each test runs a SpikingJelly network under one of the five spikestore
monitors, a SpikingJelly monitor that clones each record in its hook (the
snapshot reference) and a plain SpikingJelly monitor, whose records are the
very tensors the hooks saw: user code then writes into those through
``.numpy()``, ``.data`` and in-place ops, and resets the network, while the
writer thread is held back, so it reads the records only after every change.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from helpers import writer_held
from spikingjelly.activation_based import functional, layer, neuron
from spikingjelly.activation_based import monitor as sj
from torch import nn

import spikestore
from spikestore import monitor as ss


def snapshot(x):
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


def net_of(step_mode: str) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(8, 6), neuron.LIFNode(), layer.Linear(6, 3), neuron.LIFNode())
    for p in net.parameters():
        p.data.abs_()
    functional.set_step_mode(net, step_mode)
    return net


# (monitor, positional args before net, instance, function keyword): every
# value below is a float tensor that is not all 0/1 except the LIF spikes.
CASES = {
    "OutputMonitor": ((), (layer.Linear, neuron.LIFNode), "function_on_output"),
    "InputMonitor": ((), (layer.Linear, neuron.LIFNode), "function_on_input"),
    "AttributeMonitor": (("v", False), neuron.LIFNode, "function_on_attribute"),
    "GradInputMonitor": ((), neuron.LIFNode, "function_on_grad_input"),
    "GradOutputMonitor": ((), neuron.LIFNode, "function_on_grad_output"),
}


def mutate(value, how: str) -> None:
    """Change a recorded tensor in place the way user code might."""
    if not isinstance(value, torch.Tensor) or how == "reset_net":
        return
    if how == "numpy":  # invisible to the version counter
        a = value.detach().numpy()
        a[...] = 7.0
    elif how == "data":  # .data has its own version counter
        value.data.mul_(3).add_(1)
    else:
        with torch.no_grad():
            value.add_(5)


def run(cls: str, step_mode: str, store: spikestore.Store, changes: list[str]):
    args, instance, fn = CASES[cls]
    net = net_of(step_mode)
    ref = getattr(sj, cls)(*args, net, instance, **{fn: snapshot})
    handles = getattr(sj, cls)(*args, net, instance)  # the tensors the hooks saw
    mon = getattr(ss, cls)(*args, net, instance, store=store)
    g = torch.Generator().manual_seed(1)
    for step, how in enumerate(changes):
        store.set_step(step)
        with writer_held(store):
            x = torch.rand(4, 2, 8, generator=g)
            out = net(x) if step_mode == "m" else torch.stack([net(xt) for xt in x])
            (out * torch.rand(out.shape, generator=g)).sum().backward()  # (no expanded gradients)
            for r in handles.records:
                mutate(r, how)
            handles.clear_recorded_data()
            x.mul_(2)  # the caller reuses its input buffer
            functional.reset_net(net)
    return ref, mon


def same_bits(stored: np.ndarray, want: torch.Tensor) -> bool:
    want = want.numpy()
    return stored.dtype == want.dtype and stored.shape == want.shape and stored.tobytes() == want.tobytes()


# Multi-step mode, one kind of change at a time; single-step mode, one of each.
# Every run also resets the network and scales its input buffer after each step.
RUNS = [("m", [how] * 2) for how in ("numpy", "data", "inplace", "reset_net")] + \
    [("s", ["numpy", "data", "inplace"])]


@pytest.mark.parametrize("step_mode,changes", RUNS, ids=[f"{m}-{'+'.join(sorted(set(c)))}" for m, c in RUNS])
@pytest.mark.parametrize("cls", list(CASES))
def test_store_holds_what_the_hook_saw(tmp_path, cls, step_mode, changes):
    store = spikestore.Store(tmp_path / "s.zarr")
    with _no_warning():
        ref, mon = run(cls, step_mode, store, changes)
        store.close()
    got = spikestore.open(tmp_path / "s.zarr")
    assert got.writer.get("modified", 0) == 0 and not got.writer.get("failed_streams")
    for name in ref.monitored_layers:
        records = [r for r in ref[name] if r is not None]
        stream = got[f"{mon.quantity}/{name}"]
        assert len(stream) == len(records) > 0
        for i, r in enumerate(records):
            assert same_bits(stream[i], r), (name, i)
    # The monitor's own view reads the same records back, in SpikingJelly's order.
    assert len(mon.records) == len(ref.records)
    for a, b in zip(ref.records, list(mon.records), strict=True):
        assert (a is None and b is None) or (torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b))


@contextmanager
def _no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def test_monitors_refuse_copy_false(tmp_path):
    with spikestore.Store(tmp_path / "s.zarr") as store, \
            pytest.raises(spikestore.InvalidArgumentError, match="snapshot"):
        ss.OutputMonitor(net_of("m"), neuron.LIFNode, store=store, copy=False)
