"""Recording a small network: a 3-LIF-layer MLP's training step, monitored over unmonitored.

The reference workload (``tools/workload.py``) spends ~100-200 ms a step in
convolutions, so a recorder's fixed costs vanish in it. This benchmark takes
a network where they do not: a SpikingJelly MLP in multi-step mode on the
CPU, ``784-512-256-10`` with a LIF layer after each ``Linear`` (ATan
surrogate), T = 16, batch 64, Adam, cross-entropy on the time-mean output.
Its input is scikit-learn's handwritten digits scaled to 28x28, each
pixel's intensity its spike probability at every time step; its three LIF
layers emit 16*64*(512+256+10) = 796,672 values (3.2 MB as float32) a step.

Copies of the network, built from the same seed, train the same
batches in alternated blocks of ``--block`` steps (``tools/interleave.py``):
one unmonitored, one with ``spikestore.monitor.OutputMonitor`` on every LIF
layer into a Zarr store (default settings), whose blocks end once the
writer has caught up, its catch-up CPU counted; and a third copy whose LIF
layers are hooked by the library's check-and-pack alone, keeping nothing
(the least a recorder of every spike spends in the training thread). The
report gives the medians over rounds of each block's time over the
unmonitored one's, their quartiles, the writer thread's CPU per step, and
the layers' firing rate; the copies' losses must be identical and every
record must be on disk.

Run: ``python tools/bench_mlp.py [--rounds 90] [--block 4] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interleave  # (tools/ is on sys.path above: not a package)
import workload

import spikestore
from spikestore import monitor as ss

T = 16
BATCH = 64
SIZES = (784, 512, 256, 10)
VALUES_PER_STEP = T * BATCH * sum(SIZES[1:])


def build_mlp(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The MLP in multi-step mode and its Adam optimiser, identical for equal seeds."""
    torch.manual_seed(seed)
    parts: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        parts += [layer.Linear(fan_in, fan_out), neuron.LIFNode(surrogate_function=surrogate.ATan())]
    net = nn.Sequential(*parts)
    functional.set_step_mode(net, "m")
    return net, torch.optim.Adam(net.parameters(), lr=1e-3)


def make_batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches ``(x [T, B, 784] spikes, y [B] labels)`` of handwritten digits.

    scikit-learn's 1,797 digits (8x8, shipped with it: no download), scaled
    to 28x28 (bilinear) like MNIST, each pixel's intensity the probability of
    a spike at every time step.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).reshape(-1, SIZES[0])
    labels = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        pick = torch.randint(0, len(labels), (BATCH,), generator=g)
        x = torch.bernoulli(images[pick].clamp(0, 1).expand(T, BATCH, SIZES[0]), generator=g)
        out.append((x, labels[pick]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=90, help="rounds of alternated blocks (default 90)")
    p.add_argument("--block", type=int, default=4, help="steps per block (default 4)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps of each copy first")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    batches = make_batches(args.warmup + args.rounds * args.block)
    where = Path(tempfile.mkdtemp(prefix="spikestore-mlp-"))
    store = spikestore.Store(where / "mlp.zarr", mode="w")
    losses: dict[str, list[float]] = {k: [] for k in ("unmonitored", "pack", "monitored")}
    nets = {k: build_mlp() for k in losses}
    monitor = ss.OutputMonitor(nets["monitored"][0], neuron.LIFNode, store=store)
    interleave.floor_hooks(nets["pack"][0], "pack")

    def report(r: int, per_step: dict[str, float]) -> None:
        base = per_step["unmonitored"]
        print(f"[round {r}] unmonitored {base * 1e3:.2f} ms/step, monitored {per_step['monitored'] / base:.3f}, "
              f"pack only {per_step['pack'] / base:.3f}", flush=True)

    blocks = interleave.alternate(
        {k: workload.block_trainer(*nets[k], losses[k], store if k == "monitored" else None) for k in losses},
        batches, warmup=args.warmup, block=args.block, rounds=args.rounds, writes=("monitored",), report=report)
    monitor.remove_hooks()
    store.close()
    if not losses["monitored"] == losses["pack"] == losses["unmonitored"]:
        raise SystemExit("recording changed the training: losses differ")
    with spikestore.open(where / "mlp.zarr") as run:
        records = sum(len(run[k]) for k in run.streams)
        spikes = sum(int(run[k][i].sum()) for k in run.streams for i in range(len(run[k])))
    shutil.rmtree(where, ignore_errors=True)
    if records != 3 * len(batches):
        raise SystemExit(f"expected {3 * len(batches)} records, found {records}")
    ratios = blocks.ratios("monitored", "unmonitored")
    floor = blocks.ratios("pack", "unmonitored")
    plain_step = statistics.median(blocks.wall["unmonitored"]) / args.block
    res = {"rounds": args.rounds, "block": args.block, "values_per_step": VALUES_PER_STEP,
           "firing_rate": spikes / (VALUES_PER_STEP * len(batches)),
           "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
           "ratio_interval": interleave.median_interval(ratios),
           "pack_ratio_interval": interleave.median_interval(floor),
           "ratio_quartiles": statistics.quantiles(ratios, n=4)[::2],
           "pack_ratio_median": statistics.median(floor),
           "pack_ratio_quartiles": statistics.quantiles(floor, n=4)[::2],
           "unmonitored_step_s": plain_step,
           "writer_cpu_per_step_s": statistics.median(blocks.writer["monitored"]) / args.block}
    q, ci = res["ratio_quartiles"], res["ratio_interval"]
    print(f"\nmonitored over unmonitored, blocks of {args.block} steps, writer caught up: "
          f"{res['ratio_median']:.3f}x, median of {args.rounds} rounds (95% interval of the median "
          f"{ci[0]:.3f}-{ci[1]:.3f}; quartiles {q[0]:.3f}-{q[1]:.3f}); unmonitored step {plain_step * 1e3:.1f} ms")
    fq, fci = res["pack_ratio_quartiles"], res["pack_ratio_interval"]
    print(f"pack only (the library's check-and-pack in a hook, nothing kept): {res['pack_ratio_median']:.3f}x "
          f"(interval {fci[0]:.3f}-{fci[1]:.3f}; quartiles {fq[0]:.3f}-{fq[1]:.3f})")
    print(f"writer thread: {res['writer_cpu_per_step_s'] * 1e3:.2f} ms CPU a step "
          f"({res['writer_cpu_per_step_s'] / plain_step:.1%} of a step); firing rate {res['firing_rate']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
