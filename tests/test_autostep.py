"""Monitors advance the store's step at each forward pass until ``set_step`` is called, and say
when a ``function_on_*`` records nothing."""

from __future__ import annotations

import warnings

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

import spikestore
from spikestore import monitor
from spikestore.errors import MonitorWarning


def lif_net(step_mode: str) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(layer.Flatten(), layer.Linear(8, 6), neuron.LIFNode(surrogate_function=surrogate.ATan()),
                        layer.Linear(6, 3), neuron.LIFNode(surrogate_function=surrogate.ATan()))
    functional.set_step_mode(net, step_mode)
    return net


def train_step(net: nn.Module, T: int = 4, batch: int = 2) -> None:
    """One multi-step training step: one forward pass over ``[T, N, ...]``, backward, reset."""
    net(torch.rand(T, batch, 8)).sum().backward()
    functional.reset_net(net)


def steps(path, key: str) -> list[int]:
    with spikestore.open(path) as run:
        return run[key].steps.tolist()


def test_multi_step_forward_passes_are_steps_until_set_step(tmp_path):
    net, path = lif_net("m"), tmp_path / "run.zarr"
    with spikestore.Store(path) as store:
        monitor.OutputMonitor(net, neuron.LIFNode, store=store)
        monitor.GradInputMonitor(net, neuron.LIFNode, function_on_grad_input=torch.norm, store=store)
        for _ in range(3):
            train_step(net)
        assert store.step == 2
        store.set_step(100)  # from now on, only set_step moves the step
        train_step(net)
        train_step(net)
        assert store.step == 100
    assert steps(path, "output/2") == steps(path, "output/4") == [0, 1, 2, 100, 100]
    # the backward pass of a step is keyed like its forward pass
    assert steps(path, "grad_input/2") == [0, 1, 2, 100, 100]


def test_several_monitors_on_one_net_advance_the_step_once(tmp_path):
    net, path = lif_net("m"), tmp_path / "run.zarr"
    with spikestore.Store(path) as store:
        mons = [monitor.OutputMonitor(net, neuron.LIFNode, store=store),
                monitor.InputMonitor(net, neuron.LIFNode, store=store),
                monitor.AttributeMonitor("v", False, net, neuron.LIFNode, store=store)]
        for _ in range(4):
            train_step(net)
        mons[0].remove_hooks()  # the others still count each forward pass once
        train_step(net)
    for key in ("input/2", "v/4"):
        assert steps(path, key) == [0, 1, 2, 3, 4]
    assert steps(path, "output/2") == [0, 1, 2, 3]


def test_disabled_monitors_do_not_count_forward_passes(tmp_path):
    net, path = lif_net("m"), tmp_path / "run.zarr"
    with spikestore.Store(path) as store:
        m = monitor.OutputMonitor(net, neuron.LIFNode, store=store)
        train_step(net)
        m.disable()
        with torch.no_grad():  # a validation pass
            for _ in range(5):
                net(torch.rand(4, 2, 8))
                functional.reset_net(net)
        m.enable()
        train_step(net)
    assert steps(path, "output/2") == [0, 1]


def test_parts_of_one_network_monitored_separately_share_the_step(tmp_path):
    enc, dec = lif_net("m"), lif_net("m")[1:]
    dec[0] = layer.Linear(3, 6, step_mode="m")
    path = tmp_path / "run.zarr"
    with spikestore.Store(path) as store:
        monitor.OutputMonitor(enc, neuron.LIFNode, store=store, quantity="enc")
        monitor.OutputMonitor(dec, neuron.LIFNode, store=store, quantity="dec")
        for _ in range(3):
            dec(enc(torch.rand(4, 2, 8)))
            functional.reset_net(enc)
            functional.reset_net(dec)
    assert steps(path, "enc/2") == steps(path, "dec/4") == [0, 1, 2]


def test_single_step_mode_warns_once_and_keeps_the_time_steps_of_a_step_together(tmp_path):
    net, path = lif_net("s"), tmp_path / "run.zarr"
    with spikestore.Store(path) as store:
        m = monitor.OutputMonitor(net, neuron.LIFNode, store=store)
        with pytest.warns(MonitorWarning, match=r"single-step.*store\.set_step") as caught:
            for _ in range(2):
                for x in torch.rand(4, 2, 8):  # one forward pass per time step
                    net(x)
                functional.reset_net(net)
        assert len([w for w in caught if issubclass(w.category, MonitorWarning)]) == 1
        assert store.step == 0
        m.close()
    with spikestore.open(path) as run:
        assert run["output/2"].steps.tolist() == [0] * 8
    # with set_step, as the tutorial does, nothing is said
    path2 = tmp_path / "run2.zarr"
    with spikestore.Store(path2) as store, warnings.catch_warnings():
        warnings.simplefilter("error", MonitorWarning)
        monitor.OutputMonitor(net, neuron.LIFNode, store=store)
        for step in range(2):
            store.set_step(step)
            for x in torch.rand(4, 2, 8):
                net(x)
            functional.reset_net(net)
    with spikestore.open(path2) as run:
        assert run["output/2"].steps.tolist() == [0] * 4 + [1] * 4
        assert run["output/2"].calls.tolist() == [0, 1, 2, 3] * 2


@pytest.mark.parametrize("store", [True, False], ids=["store", "memory"])
def test_a_function_returning_none_warns_once_per_layer(tmp_path, store):
    net = lif_net("m")
    target = spikestore.Store(tmp_path / "run.zarr") if store else None
    m = monitor.OutputMonitor(net, neuron.LIFNode, function_on_output=lambda y: None, store=target)
    with pytest.warns(MonitorWarning, match="function_on_output returned None") as caught:
        for _ in range(3):
            train_step(net)
    layers = sorted(str(w.message).split("layer ")[1].split(",")[0] for w in caught
                    if issubclass(w.category, MonitorWarning))
    assert layers == ["'2'", "'4'"]
    assert len(m.records) == 6 and all(r is None for r in m.records)
    m.remove_hooks()
    if target is not None:
        target.close()
    # A None the hook itself sees (the gradient of an input that needs none) is expected: no warning.
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(8, 3, step_mode="m"), neuron.IFNode(step_mode="m"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MonitorWarning)
        warnings.filterwarnings("ignore", "Full backward hook")
        g = monitor.GradInputMonitor(net, layer.Linear, store=tmp_path / "grad.zarr" if store else None)
        net(torch.rand(4, 2, 8)).sum().backward()
        assert g.records[0] is None
        g.close()
