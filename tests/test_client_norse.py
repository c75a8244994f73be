"""Norse networks recorded by spikestore, read back bit-exact against what Norse returned.

Two small networks in Norse's two usual styles, each trained for a few batches on random input:
``LIFCell`` stepped over time in a Python loop with its state passed explicitly (one forward pass
of the network per batch), and ``LIF`` over a whole ``[T, N, ...]`` sequence inside a
``SequentialState``. Norse's neurons return ``(spikes, state)``, the state a named tuple
(``LIFFeedForwardState(v, i)``); a monitor records the spikes as ``output.0/<layer>`` and each
state field as ``output.1.<field>/<layer>``; an input monitor sees ``(x, None)`` at a cell's first
time step and ``(x, state)`` after it, and reads each record back with its own structure. Each
run is recorded by the monitors and by ``Store.append`` in the training loop; the spikes and
states the network returned during the same run, kept in plain lists, are the reference. Streams
are compared whole, with their steps and calls, so a dropped, repeated or reordered record fails.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import check_stream, not_trivial
from torch import nn

import spikestore
from spikestore import monitor

with warnings.catch_warnings():
    # Norse 1.1 scripts functions with torch.jit.script at import, which torch 2.13 deprecates.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
    norse = pytest.importorskip("norse.torch")

T, N, F, H, OUT = 6, 4, 5, 8, 3  # time steps, batch, inputs, hidden neurons, outputs
BATCHES = 3
LOW = norse.LIFParameters(v_th=torch.tensor(0.2))  # a low threshold: spikes within T steps


class CellNet(nn.Module):
    """Linear-LIFCell-Linear-LIFCell, stepped over time with explicit states."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(F, H), norse.LIFCell(LOW)
        self.fc2, self.lif2 = nn.Linear(H, OUT), norse.LIFCell(LOW)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        s1 = s2 = None
        out = []
        for t in range(x.shape[0]):
            current = self.fc1(x[t])
            z1, s1 = self.lif1(current, s1)
            z2, s2 = self.lif2(self.fc2(z1), s2)
            out.append((current, z1, s1.v, s1.i, z2, s2.v, s2.i))
        return out


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(T, N, F, generator=g) * 8, torch.rand(N, OUT, generator=g) * T) for _ in range(BATCHES)]


def train_step(opt: torch.optim.Optimizer, spikes: torch.Tensor, target: torch.Tensor) -> None:
    loss = ((spikes.sum(0) - target) ** 2).mean()  # spike counts towards a target count
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_lif_cells_in_a_python_loop(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = CellNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    names = ("current1", "z1", "v1", "i1", "z2", "v2", "i2")
    ref: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with spikestore.Store(tmp_path / "mon.zarr", mode="w") as store, \
            spikestore.Store(tmp_path / "hand.zarr", mode="w") as hand:
        # No set_step: one forward pass of the network is one batch, so one step.
        cells = monitor.OutputMonitor(net, norse.LIFCell, store=store)
        first_sample = monitor.OutputMonitor(net, norse.LIFCell, batch=[0])  # in memory, sample 0
        # A cell's input is (x, None) at its first time step, (x, state) after it.
        inputs = monitor.InputMonitor(net, norse.LIFCell, store=store)
        for step, (x, target) in enumerate(batches()):
            out = net(x)
            hand.set_step(step)
            for per_step in out:
                hand.append("spikes/lif1", per_step[1])
                for name, value in zip(names, per_step, strict=True):
                    ref[name].append(value.detach().numpy().copy())
            train_step(opt, torch.stack([o[4] for o in out]), target)
        # The view rebuilds Norse's state as its own named tuple.
        z, state = cells["lif2"][T + 2]
        assert type(state) is norse.LIFFeedForwardState
        assert torch.equal(z, torch.from_numpy(ref["z2"][T + 2]))
        assert torch.equal(state.v, torch.from_numpy(ref["v2"][T + 2]))
        # A batch selection applies to the state's tensors too.
        z, state = first_sample["lif1"][4]
        assert type(state) is norse.LIFFeedForwardState
        assert torch.equal(state.i, torch.from_numpy(ref["i1"][4][[0]]))
        # Each input is read back with its own structure.
        x0, none = inputs["lif1"][T]
        assert none is None and torch.equal(x0, torch.from_numpy(ref["current1"][T]))
        _, state = inputs["lif1"][T + 1]
        assert type(state) is norse.LIFFeedForwardState
        assert torch.equal(state.v, torch.from_numpy(ref["v1"][T]))
        cells.close()
        first_sample.close()
        inputs.close()
    not_trivial(ref["z1"])
    not_trivial(ref["z2"])

    steps, calls = np.repeat(np.arange(BATCHES), T), np.tile(np.arange(T), BATCHES)
    with spikestore.open(tmp_path / "mon.zarr") as run:
        assert sorted(run.streams) == sorted(f"{leaf}/lif{layer}" for layer in ("1", "2") for leaf in (
            "output.0", "output.1.v", "output.1.i", "input.0", "input.1.v", "input.1.i"))
        for layer in ("1", "2"):
            check_stream(run, f"output.0/lif{layer}", ref[f"z{layer}"], steps, calls)
            check_stream(run, f"output.1.v/lif{layer}", ref[f"v{layer}"], steps, calls)
            check_stream(run, f"output.1.i/lif{layer}", ref[f"i{layer}"], steps, calls)
        assert run["output.0/lif1"].sel(step=[2]).shape == (T, N, H)  # one batch, time first
        check_stream(run, "input.0/lif1", ref["current1"], steps, calls)
        # The state a cell was given: none at t = 0, the state it returned at t - 1 after that.
        given = [v for j, v in enumerate(ref["v1"]) if j % T != T - 1]
        check_stream(run, "input.1.v/lif1", given, np.repeat(np.arange(BATCHES), T - 1),
                     np.tile(np.arange(T - 1), BATCHES))
    with spikestore.open(tmp_path / "hand.zarr") as run:
        check_stream(run, "spikes/lif1", ref["z1"], steps, calls)


def test_lif_over_a_sequence_in_sequential_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = norse.SequentialState(nn.Linear(F, H), norse.LIF(LOW, record_states=True), nn.Linear(H, OUT),
                                norse.LIF(LOW, record_states=True), return_hidden=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    ref: dict[str, list[np.ndarray]] = {"z1": [], "v1": [], "z3": [], "v3": [], "i3": []}
    with spikestore.Store(tmp_path / "mon.zarr", mode="w") as store, \
            spikestore.Store(tmp_path / "hand.zarr", mode="w") as hand:
        lifs = monitor.OutputMonitor(net, norse.LIF, store=store)
        named = monitor.OutputMonitor(net, norse.LIF, lambda out: {"z": out[0], "v": out[1].v}, store=store,
                                      quantity="named")
        for step, (x, target) in enumerate(batches()):
            hidden, state = net(x)  # every layer's [T, N, ...] output, and each LIF's states over time
            hand.set_step(step)
            hand.append("spikes/3", hidden[3])
            hand.append("v/3", state[3].v)
            for name, value in (("z1", hidden[1]), ("v1", state[1].v), ("z3", hidden[3]), ("v3", state[3].v),
                                ("i3", state[3].i)):
                ref[name].append(value.detach().numpy().copy())
            train_step(opt, hidden[3], target)
        lifs.close()
        named.close()
    not_trivial(ref["z1"])
    not_trivial(ref["z3"])

    steps, calls = np.arange(BATCHES), np.zeros(BATCHES)  # one [T, N, ...] record per layer and step
    with spikestore.open(tmp_path / "mon.zarr") as run:
        check_stream(run, "output.0/1", ref["z1"], steps, calls)
        check_stream(run, "output.1.v/1", ref["v1"], steps, calls)
        check_stream(run, "output.0/3", ref["z3"], steps, calls)
        check_stream(run, "output.1.v/3", ref["v3"], steps, calls)
        check_stream(run, "output.1.i/3", ref["i3"], steps, calls)
        check_stream(run, "named.z/1", ref["z1"], steps, calls)  # a dict names the streams
        check_stream(run, "named.v/3", ref["v3"], steps, calls)
    with spikestore.open(tmp_path / "hand.zarr") as run:
        check_stream(run, "spikes/3", ref["z3"], steps, calls)
        check_stream(run, "v/3", ref["v3"], steps, calls)


def test_two_leaves_naming_one_stream_are_refused(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(F, H), norse.LIF(LOW))
    with spikestore.Store(tmp_path / "s.zarr", mode="w") as store:
        clash = monitor.OutputMonitor(net, norse.LIF, lambda out: {"1": {"v": out[1].v}, "1.v": out[1].v},
                                      store=store)
        with pytest.raises(spikestore.InvalidValueError, match=r"'output\.1\.v/1'"):
            net(torch.rand(T, N, F))
        clash.close()
