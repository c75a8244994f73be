"""The public reference workload, as a reusable module.

It is the network and training loop that ``tools/bench_workload.py`` records
(described with its figures in docs/performance.md, "Reference workload"), and
that other tools reuse for real spikes (``tools/bench_codec.py --real``).

A small SpikingJelly CNN in multi-step mode on the CPU::

    Conv2d(1,16,3,p=1)-BN-LIF-MaxPool2d(2)
    -Conv2d(16,32,3,p=1)-BN-LIF-MaxPool2d(2)
    -Flatten-Linear(1568,256)-LIF-Linear(256,10)-LIF

T=8 time steps, batch 32, 28x28 binary (Bernoulli) input made from a fixed
seed (no dataset download), ATan surrogate, Adam, cross-entropy on the
time-mean output, ``functional.reset_net`` after every step.

The four LIF layers emit 8*32*(16*28*28 + 32*14*14 + 256 + 10) = 4,884,992
values per step (19.5 MB as float32); :data:`VALUES_PER_STEP` holds the number.

Example
-------
>>> import sys; sys.path.insert(0, "tools")                 # doctest: +SKIP
>>> import workload
>>> net, opt = workload.build_net(seed=0)
>>> losses = workload.train_steps(net, opt, workload.make_batches(5, seed=0))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate

__all__ = [
    "BATCH",
    "LIF_SHAPES",
    "NUM_CLASSES",
    "VALUES_PER_STEP",
    "T",
    "block_trainer",
    "build_net",
    "make_batches",
    "train_steps",
]

T = 8
BATCH = 32
NUM_CLASSES = 10
IMAGE = 28
#: Per-step output shape of each LIF layer, keyed by its name in ``named_modules()``.
LIF_SHAPES: dict[str, tuple[int, ...]] = {
    "2": (T, BATCH, 16, 28, 28),
    "6": (T, BATCH, 32, 14, 14),
    "10": (T, BATCH, 256),
    "12": (T, BATCH, NUM_CLASSES),
}
#: Values (0/1 spikes) the LIF layers emit per training step.
VALUES_PER_STEP = sum(int(torch.Size(s).numel()) for s in LIF_SHAPES.values())

Batch = tuple[torch.Tensor, torch.Tensor]


def build_net(seed: int = 0, lr: float = 1e-3) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Build the reference CNN (multi-step mode) and its Adam optimiser.

    ``torch.manual_seed(seed)`` is called first, so every call with the same
    seed gives identical weights.
    """
    torch.manual_seed(seed)
    net = nn.Sequential(
        layer.Conv2d(1, 16, 3, padding=1),
        layer.BatchNorm2d(16),
        neuron.LIFNode(surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2),
        layer.Conv2d(16, 32, 3, padding=1),
        layer.BatchNorm2d(32),
        neuron.LIFNode(surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(32 * 7 * 7, 256),
        neuron.LIFNode(surrogate_function=surrogate.ATan()),
        layer.Linear(256, NUM_CLASSES),
        neuron.LIFNode(surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(net, "m")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    return net, opt


def make_batches(n: int, seed: int = 0, p: float = 0.5, batch: int = BATCH,
                 device: str | torch.device = "cpu") -> list[Batch]:
    """``n`` batches of random binary images and labels, from a fixed seed.

    Each batch is ``(x, y)`` with ``x`` float32 of shape ``[T, batch, 1, 28, 28]``
    (i.i.d. Bernoulli(``p``) pixels, fresh for every time step) and ``y``
    int64 labels of shape ``[batch]``, on ``device`` (the GPU benchmark,
    tools/bench_gpu.py, uses batch 128 on CUDA). A private generator is
    used, so the global torch RNG is left alone.
    """
    g = torch.Generator().manual_seed(seed)
    out: list[Batch] = []
    for _ in range(n):
        x = torch.bernoulli(torch.full((T, batch, 1, IMAGE, IMAGE), p), generator=g)
        y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


def train_steps(net: nn.Module, opt: torch.optim.Optimizer, batches: Iterable[Batch],
                on_step: Callable[[int], Any] | None = None, start: int = 0,
                sync: bool = True) -> list[Any]:
    """Train one step per batch; return the loss of each step (floats, or 0-d tensors with ``sync=False``).

    Parameters
    ----------
    net, opt
        From :func:`build_net`.
    batches
        Any iterable of ``(x, y)`` (a list, or ``itertools.islice(cycle(...))``
        for long runs).
    on_step
        Called as ``on_step(step)`` at the start of each step, before the
        forward pass (``store.set_step`` goes here).
    start
        Number of the first step.
    sync
        ``False``: no per-step ``float(loss)`` (on CUDA a synchronisation
        every step); the losses come back as 0-d tensors on the device.
    """
    net.train()
    losses: list[float] = []
    for step, (x, y) in enumerate(batches, start):
        if on_step is not None:
            on_step(step)
        out = net(x)  # [T, B, 10] spikes
        loss = F.cross_entropy(out.mean(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        functional.reset_net(net)
        losses.append(float(loss.detach()) if sync else loss.detach())
    return losses


def block_trainer(net: nn.Module, opt: torch.optim.Optimizer, losses: list[Any],
                  store: Any = None) -> Callable[[Sequence[Batch], int], None]:
    """``train(batches, start)``: :func:`train_steps` of ``batches`` as steps ``start, start + 1, ...``.

    For comparing copies of a network block by block (``tools/interleave.py``):
    each block's losses are appended to ``losses``, and a ``store`` (a
    :class:`spikestore.Store`) is given each step's number first.
    """

    def on_step(step: int) -> None:
        if store is not None:
            store.set_step(step)

    def train(batches: Sequence[Batch], start: int) -> None:
        losses.extend(train_steps(net, opt, batches, on_step=on_step, start=start))

    return train
