"""The flight recorder in a real process group: two gloo ranks train a DDP network (docs/flight-recorder.md §5).

Rank 1 fires a trigger, rank 0 does not: rank 1 keeps its own window, rank 0
keeps nothing, and the kept records equal that rank's SpikingJelly monitor's
records of those steps, bit for bit.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from spikingjelly.activation_based import functional, layer, neuron
from spikingjelly.activation_based import monitor as sj
from torch import nn

import spikestore
from spikestore import monitor as ss

STEPS = 8
LAYERS = ("1", "3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, path: str, out: str) -> None:
    try:
        _train(rank, world, port, path, out)
    except BaseException:
        import traceback

        (Path(out) / f"error{rank}.txt").write_text(traceback.format_exc())
        raise


def _train(rank: int, world: int, port: int, path: str, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(8, 16), neuron.LIFNode(tau=2.0), layer.Linear(16, 4), neuron.LIFNode(tau=2.0))
    functional.set_step_mode(net, "m")
    with torch.no_grad():
        net[0].weight.mul_(2)
        net[2].weight.mul_(4)
    model = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = spikestore.FlightRecorder(before=1, after=1, triggers=())
    store = spikestore.Store(path, mode="w", flight_recorder=rec)
    ref = sj.OutputMonitor(net, neuron.LIFNode)
    mon = ss.OutputMonitor(net, neuron.LIFNode, store=store)
    g = torch.Generator().manual_seed(100 + rank)
    for step in range(STEPS):
        store.set_step(step)
        opt.zero_grad()
        ((model(torch.rand(4, 3, 8, generator=g) * 6).mean() - 0.3) ** 2).backward()
        opt.step()
        functional.reset_net(net)
        if rank == 1 and step == 4:
            store.trigger("rank 1 only")
    for name in LAYERS:
        np.save(Path(out) / f"rank{rank}_{name}.npy", np.stack([t.detach().numpy() for t in ref[name]]))
    mon.close()
    store.close()
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # spawns processes
def test_a_trigger_on_one_ddp_rank_keeps_that_ranks_window(tmp_path):
    path = tmp_path / "run.zarr"
    ctx = mp.spawn(_worker, args=(2, _free_port(), str(path), str(tmp_path)), nprocs=2, join=False)
    for p in ctx.processes:
        p.join(120)
    errors = "\n".join(f.read_text() for f in sorted(tmp_path.glob("error*.txt")))
    assert not errors, errors
    assert [p.exitcode for p in ctx.processes] == [0, 0]
    run = spikestore.open(path)
    assert run.ranks == [0, 1]
    assert run.triggers == [{"step": 4, "reason": "rank 1 only", "stream": None, "rank": 1}]
    assert run.rank(0).streams == [] and run.rank(0).triggers == []
    for name in LAYERS:
        s = run[f"output/{name}"]
        assert s.steps.tolist() == [3, 4, 5] and s.ranks.tolist() == [1, 1, 1]
        want = np.load(tmp_path / f"rank1_{name}.npy")[3:6]
        assert want.any()
        np.testing.assert_array_equal(s[:], want)
