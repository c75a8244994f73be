"""snnTorch networks recorded by spikestore, read back bit-exact against what snnTorch returned.

Two small networks in snnTorch's two usual styles, each trained for a few batches on random
input: the membrane passed explicitly (``spk, mem = lif(cur, mem)``, time loop inside
``forward``, one forward pass per batch) and ``init_hidden=True`` (the layer keeps its membrane,
the network is called once per time step). Each run is recorded by spikestore's monitors and by
``Store.append`` in the training loop; the spikes and membrane potentials the network returned
during the same run, kept in plain lists, are the reference. Streams are compared whole, with
their steps and calls, so a dropped, repeated or reordered record fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import check_stream, not_trivial
from torch import nn

import spikestore
from spikestore import monitor

snn = pytest.importorskip("snntorch")
SF = pytest.importorskip("snntorch.functional")
utils = pytest.importorskip("snntorch.utils")

T, N, F, H, OUT = 6, 4, 5, 8, 3  # time steps, batch, inputs, hidden neurons, outputs
BATCHES = 3


class ExplicitNet(nn.Module):
    """snnTorch's tutorial network: Linear-Leaky-Linear-Leaky, membranes passed explicitly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(F, H), snn.Leaky(beta=0.8)
        self.fc2, self.lif2 = nn.Linear(H, OUT), snn.Leaky(beta=0.8)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        rec: dict[str, list[torch.Tensor]] = {"spk1": [], "mem1": [], "spk2": [], "mem2": []}
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[t]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            for key, value in zip(rec, (spk1, mem1, spk2, mem2), strict=True):
                rec[key].append(value)
        return {key: torch.stack(values) for key, values in rec.items()}


class HiddenNet(nn.Module):
    """The same layers with ``init_hidden=True``: one call is one time step."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(F, H), snn.Leaky(beta=0.8, init_hidden=True)
        self.fc2, self.lif2 = nn.Linear(H, OUT), snn.Leaky(beta=0.8, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        spk1 = self.lif1(self.fc1(x))
        spk2, mem2 = self.lif2(self.fc2(spk1))
        return spk1, spk2, mem2


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(T, N, F, generator=g) * 2, torch.randint(0, OUT, (N,), generator=g)) for _ in range(BATCHES)]


def test_explicit_membranes_through_monitors_and_append(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ExplicitNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = SF.ce_rate_loss()
    ref: dict[str, list[np.ndarray]] = {"spk1": [], "mem1": [], "spk2": [], "mem2": []}
    with spikestore.Store(tmp_path / "mon.zarr", mode="w") as store, \
            spikestore.Store(tmp_path / "hand.zarr", mode="w") as hand:
        # No set_step: one forward pass of the network is one batch, so one step.
        spikes = monitor.OutputMonitor(net, snn.Leaky, store=store)
        only = monitor.OutputMonitor(net, snn.Leaky, lambda out: out[0], store=store, quantity="spk")
        for step, (x, y) in enumerate(batches()):
            out = net(x)
            hand.set_step(step)
            for key, value in out.items():  # the stacked recordings snnTorch's tutorials return
                hand.append(f"{key}/net", value)
                ref[key].append(value.detach().numpy().copy())
            loss = loss_fn(out["spk2"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert spikes.monitored_layers == ["lif1", "lif2"]
        first = spikes["lif1"][0]
        assert isinstance(first, tuple) and torch.equal(first[1], torch.from_numpy(ref["mem1"][0][0]))
        spikes.close()
        only.close()
    not_trivial(ref["spk1"])
    not_trivial(ref["spk2"])

    # The monitors: one record per call of a layer, T calls per step (the time axis).
    per_call = {key: [r[t] for r in ref[key] for t in range(T)] for key in ref}
    steps, calls = np.repeat(np.arange(BATCHES), T), np.tile(np.arange(T), BATCHES)
    with spikestore.open(tmp_path / "mon.zarr") as run:
        assert sorted(run.streams) == ["output.0/lif1", "output.0/lif2", "output.1/lif1", "output.1/lif2",
                                       "spk/lif1", "spk/lif2"]
        for layer in ("1", "2"):
            check_stream(run, f"output.0/lif{layer}", per_call[f"spk{layer}"], steps, calls)
            check_stream(run, f"spk/lif{layer}", per_call[f"spk{layer}"], steps, calls)  # the spikes picked
            check_stream(run, f"output.1/lif{layer}", per_call[f"mem{layer}"], steps, calls)
        assert run["output.0/lif1"].sel(step=[1]).shape == (T, N, H)  # one batch, time first
    # By hand: one stacked [T, N, ...] record per step.
    with spikestore.open(tmp_path / "hand.zarr") as run:
        for key in ref:
            check_stream(run, f"{key}/net", ref[key], np.arange(BATCHES), np.zeros(BATCHES))


def test_init_hidden_stepped_in_a_python_loop(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = HiddenNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = SF.ce_rate_loss()
    ref: dict[str, list[np.ndarray]] = {"spk1": [], "mem1": [], "spk2": [], "mem2": []}
    with spikestore.Store(tmp_path / "mon.zarr", mode="w") as store, \
            spikestore.Store(tmp_path / "hand.zarr", mode="w") as hand:
        spikes = monitor.OutputMonitor(net, snn.Leaky, store=store)
        mems = monitor.AttributeMonitor("mem", False, net, snn.Leaky, store=store)
        for step, (x, y) in enumerate(batches()):
            store.set_step(step)  # the network runs once per time step: say which batch it is
            hand.set_step(step)
            utils.reset(net)
            spk_rec = []
            for t in range(T):
                spk1, spk2, mem2 = net(x[t])
                spk_rec.append(spk2)
                hand.append("spk1/lif1", spk1)
                hand.append("mem/lif1", net.lif1.mem)
                for key, value in (("spk1", spk1), ("mem1", net.lif1.mem), ("spk2", spk2), ("mem2", mem2)):
                    ref[key].append(value.detach().numpy().copy())
            loss = loss_fn(torch.stack(spk_rec), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        spikes.close()
        mems.close()
    not_trivial(ref["spk1"])
    not_trivial(ref["spk2"])

    steps, calls = np.repeat(np.arange(BATCHES), T), np.tile(np.arange(T), BATCHES)
    with spikestore.open(tmp_path / "mon.zarr") as run:
        # lif1 returns its spikes, lif2 (output=True) the tuple (spk, mem): one stream per element.
        assert sorted(run.streams) == ["mem/lif1", "mem/lif2", "output.0/lif2", "output.1/lif2", "output/lif1"]
        check_stream(run, "output/lif1", ref["spk1"], steps, calls)
        check_stream(run, "output.0/lif2", ref["spk2"], steps, calls)
        check_stream(run, "output.1/lif2", ref["mem2"], steps, calls)
        check_stream(run, "mem/lif1", ref["mem1"], steps, calls)
        check_stream(run, "mem/lif2", ref["mem2"], steps, calls)
    with spikestore.open(tmp_path / "hand.zarr") as run:
        check_stream(run, "spk1/lif1", ref["spk1"], steps, calls)
        check_stream(run, "mem/lif1", ref["mem1"], steps, calls)
