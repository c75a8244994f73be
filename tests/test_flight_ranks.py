"""The flight recorder in a real process group: two gloo ranks train a DDP network (docs/flight-recorder.md §5).

Rank 1 fires a trigger, rank 0 does not: rank 1 keeps its own window, rank 0
keeps nothing, and the kept records equal that rank's SpikingJelly monitor's
records of those steps, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from helpers import DDP_LAYERS, ddp_spiking_net, ddp_step, rank_records, save_rank_records, spawn_ranks
from spikingjelly.activation_based import monitor as sj
from spikingjelly.activation_based import neuron

import spikestore
from spikestore import monitor as ss

STEPS = 8


def _train(rank: int, world: int, path: str, out: str) -> None:
    """One rank: train for STEPS steps into a flight-recorded store; rank 1 fires a trigger at step 4."""
    net, model, opt = ddp_spiking_net()
    rec = spikestore.FlightRecorder(before=1, after=1, triggers=())
    store = spikestore.Store(path, mode="w", flight_recorder=rec)
    ref = sj.OutputMonitor(net, neuron.LIFNode)
    mon = ss.OutputMonitor(net, neuron.LIFNode, store=store)
    g = torch.Generator().manual_seed(100 + rank)
    for step in range(STEPS):
        store.set_step(step)
        ddp_step(net, model, opt, g)
        if rank == 1 and step == 4:
            store.trigger("rank 1 only")
    save_rank_records(ref, rank, out)
    mon.close()
    store.close()
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # spawns processes
def test_a_trigger_on_one_ddp_rank_keeps_that_ranks_window(tmp_path):
    path = tmp_path / "run.zarr"
    assert spawn_ranks(_train, tmp_path, str(path), str(tmp_path)) == [0, 0]
    run = spikestore.open(path)
    assert run.ranks == [0, 1]
    assert run.triggers == [{"step": 4, "reason": "rank 1 only", "stream": None, "rank": 1}]
    assert run.rank(0).streams == [] and run.rank(0).triggers == []
    for name in DDP_LAYERS:
        s = run[f"output/{name}"]
        assert s.steps.tolist() == [3, 4, 5] and s.ranks.tolist() == [1, 1, 1]
        want = rank_records(tmp_path, 1, name)[3:6]
        assert want.any()
        np.testing.assert_array_equal(s[:], want)
