"""Monitor parity with SpikingJelly's own monitors: the nets, the monitor list and the
comparison shared by the CPU tests (tests/test_monitor.py) and the CUDA ones (tests/test_cuda.py)."""

from __future__ import annotations

from typing import Any

import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

__all__ = ["MONITORS", "firing_rate", "make_monitor", "same_record", "tutorial_net"]


def tutorial_net(node: type, step_mode: str, seed: int = 0) -> nn.Module:
    """The tutorial's two-layer net (Linear(8,4)-node-Linear(4,2)-node), positive weights so it spikes."""
    torch.manual_seed(seed)
    net = nn.Sequential(layer.Linear(8, 4), node(), layer.Linear(4, 2), node())
    for p in net.parameters():
        p.data.abs_()
    functional.set_step_mode(net, step_mode)
    return net


def firing_rate(s: torch.Tensor) -> torch.Tensor:
    """A function_on_output: the fraction of neurons firing, per sample."""
    return s.flatten(1).mean(1)


#: Every monitor kind, as (class name, positional args, keyword args).
MONITORS = [
    ("OutputMonitor", (), {}),
    ("OutputMonitor", (), {"function_on_output": firing_rate}),
    ("InputMonitor", (), {}),
    ("AttributeMonitor", ("v", True), {}),
    ("AttributeMonitor", ("v", False), {}),
    ("GradInputMonitor", (), {"function_on_grad_input": torch.norm}),
    ("GradInputMonitor", (), {}),
    ("GradOutputMonitor", (), {}),
]


def make_monitor(mod: Any, cls: str, args: tuple, kwargs: dict, net: nn.Module, node: type, **extra: Any) -> Any:
    """Monitor ``cls`` of module ``mod`` (SpikingJelly's or spikestore's) on ``net``, as :data:`MONITORS` lists it."""
    c = getattr(mod, cls)
    if cls == "AttributeMonitor":
        return c(*args, net, node, **kwargs, **extra)
    return c(net, node, **kwargs, **extra)


def same_record(a: object, b: object) -> bool:
    """Whether a monitor record read back equals SpikingJelly's (tensors moved to the CPU)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
            torch.equal(a.detach().cpu(), b)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same_record(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
