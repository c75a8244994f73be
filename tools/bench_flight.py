"""Flight recorder figures (docs/flight-recorder.md §7): its cost armed, its ring's memory, its bytes on disk.

Four measurements, in one process:

1. **Armed, no trigger, against unmonitored.** Copies of the
   reference workload's network (``tools/workload.py``: SpikingJelly CNN,
   CPU, T=8, batch 32) train the same batches in alternated blocks of
   ``--block`` steps (``tools/interleave.py``): unmonitored; ``read``, a
   forward hook on each LIF layer that only reads its output once
   (``np.count_nonzero``), the floor any recorder that looks at every
   value pays; and ``armed``, ``spikestore.monitor.OutputMonitor`` on a
   store armed with ``FlightRecorder()`` (defaults: before=50, after=10,
   "nonfinite") that never fires, its blocks ending once the writer has
   caught up. A fourth copy, ``pack``, has a hook that only checks and
   packs each output with the library's kernel into a reused buffer,
   keeping nothing: the packing the ring costs, without the store. The
   report gives the medians over rounds of each block's time over the
   unmonitored block's, and the armed writer's CPU a step.
2. **The ring against its budget.** Of the armed run: the most bytes the
   ring held (``Run.flight_recorder["ring_peak_bytes"]``) against
   ``max_bytes``, and the same for a ring given a budget of 20 steps
   (it must hold it, and count the steps it dropped early).
3. **Bytes on disk, 10,000 steps, 3 triggers, against recording
   everything.** The LIF outputs of real training steps (a pool, cycled)
   are appended for ``--disk-steps`` steps (10,000) to a flight-recorded
   store with ``store.trigger`` at 20%, 50% and 80% of the run, and for
   ``--plain-steps`` steps to a plain store, whose bytes are scaled to
   ``--disk-steps`` steps (bytes grow by the step: every step's records
   are the same size and go to the same chunk layout).

4. **The training thread's share.** The same four LIF outputs of one real
   step, appended to an armed store step after step: the median time of a
   step's ``Store.append`` calls, against reading the same tensors once
   (``np.count_nonzero``). Unlike the ratios of training steps, whose
   spread on a shared 2-core machine is several percent, this isolates what
   the flight recorder adds to each step.

``--quick`` shrinks everything to a one-minute smoke run.

Run: ``python tools/bench_flight.py [--quick] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import interleave  # (tools/ is on sys.path above: not a package)
import workload

import spikestore
from spikestore import FlightRecorder
from spikestore._write.flight_ring import ENTRY_OVERHEAD


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def trainer(kind: str, store: spikestore.Store | None, losses: list[float]) -> Callable[[Sequence[Any], int], None]:
    """``train(batches, start)`` of one variant on its own copy of the workload's network."""
    from spikingjelly.activation_based import neuron

    from spikestore import monitor as ss

    net, opt = workload.build_net(seed=0)
    if kind == "armed":
        ss.OutputMonitor(net, neuron.LIFNode, store=store)
    elif kind != "unmonitored":
        interleave.floor_hooks(net, kind)
    return workload.block_trainer(net, opt, losses, store)


def armed_vs_unmonitored(args: argparse.Namespace, where: Path) -> dict[str, Any]:
    """Unmonitored, read-once and armed copies of the workload in alternated blocks (``tools/interleave.py``)."""
    batches = workload.make_batches(args.warmup + args.rounds * args.block, seed=0)
    rec = FlightRecorder()
    losses: dict[str, list[float]] = {k: [] for k in ("unmonitored", "read", "pack", "armed")}
    with spikestore.Store(where / "armed.zarr", mode="w", overwrite=True, flight_recorder=rec) as store:
        variants = {k: trainer(k, store if k == "armed" else None, losses[k]) for k in losses}

        def report(r: int, per_step: dict[str, float]) -> None:
            base = per_step["unmonitored"]
            print(f"[round {r}] unmonitored {base * 1e3:.1f} ms/step, armed {per_step['armed'] / base:.3f}, "
                  f"read once {per_step['read'] / base:.3f}, pack only {per_step['pack'] / base:.3f}", flush=True)

        blocks = interleave.alternate(variants, batches, warmup=args.warmup, block=args.block, rounds=args.rounds,
                                      writes=("armed",), report=report)
    if not losses["armed"] == losses["read"] == losses["pack"] == losses["unmonitored"]:
        raise SystemExit("recording changed the training: losses differ")
    run = spikestore.open(where / "armed.zarr")
    assert run.streams == [] and run.triggers == [], "armed without a trigger must write no record"
    doc = run.flight_recorder or {}
    armed, read = blocks.ratios("armed", "unmonitored"), blocks.ratios("read", "unmonitored")
    pack = blocks.ratios("pack", "unmonitored")
    over_pack = [a / b for a, b in zip(armed, pack, strict=True)]
    return {"rounds": args.rounds, "block": args.block, "ratio_median": statistics.median(armed),
            "ratio_interval": interleave.median_interval(armed),
            "pack_ratio_interval": interleave.median_interval(pack),
            "armed_over_pack_interval": interleave.median_interval(over_pack),
            "ratio_quartiles": statistics.quantiles(armed, n=4)[::2], "ratio_min": min(armed),
            "ratio_max": max(armed), "read_ratio_median": statistics.median(read),
            "read_ratio_quartiles": statistics.quantiles(read, n=4)[::2],
            "pack_ratio_median": statistics.median(pack),
            "pack_ratio_quartiles": statistics.quantiles(pack, n=4)[::2],
            "armed_over_pack_median": statistics.median(over_pack),
            "unmonitored_step_s": statistics.median(blocks.wall["unmonitored"]) / args.block,
            "writer_cpu_per_step_s": statistics.median(blocks.writer["armed"]) / args.block,
            "ring_peak_bytes": doc["ring_peak_bytes"], "max_bytes": rec.max_bytes,
            "shrunk_steps": doc["shrunk_steps"],
            "per_round": {"armed": armed, "read": read, "pack": pack}}  # (to pool runs: --json of each)


def pool_of_spikes(n: int) -> list[dict[str, Any]]:
    """The LIF outputs of ``n`` real training steps of the reference workload (float32 0/1 tensors)."""
    from spikingjelly.activation_based import monitor as sj
    from spikingjelly.activation_based import neuron

    net, opt = workload.build_net(seed=0)
    m = sj.OutputMonitor(net, neuron.LIFNode)
    workload.train_steps(net, opt, workload.make_batches(n, seed=1))
    per_step = len(m.monitored_layers)
    out = []
    for i in range(n):
        out.append({f"output/{name}": m.records[i * per_step + j].detach()
                    for j, name in enumerate(m.monitored_layers)})
    m.remove_hooks()
    return out


def append_steps(path: Path, pool: list[dict[str, Any]], steps: int, rec: FlightRecorder | None,
                 marks: set[int]) -> float:
    t0 = time.perf_counter()
    with spikestore.Store(path, mode="w", overwrite=True, flight_recorder=rec) as store:
        for step in range(steps):
            store.set_step(step)
            for key, t in pool[step % len(pool)].items():
                store.append(key, t)
            if step in marks:
                store.trigger(f"mark at {step}")
    return time.perf_counter() - t0


def disk(args: argparse.Namespace, where: Path) -> dict[str, Any]:
    pool = pool_of_spikes(args.pool)
    n = args.disk_steps
    marks = {n // 5, n // 2, 4 * n // 5}
    rec = FlightRecorder(before=50, after=10, triggers=())
    flight_s = append_steps(where / "flight.zarr", pool, n, rec, marks)
    run = spikestore.open(where / "flight.zarr")
    kept = len(run[run.streams[0]])
    flight_bytes = _disk_bytes(where / "flight.zarr")
    plain_s = append_steps(where / "plain.zarr", pool, args.plain_steps, None, set())
    plain_bytes = _disk_bytes(where / "plain.zarr")
    everything = plain_bytes * n / args.plain_steps
    # The budget: a ring of 20 steps' bytes holds 20 steps and counts what it drops.
    step_bytes = sum(math.prod(t.shape[:-1]) * -(-t.shape[-1] // 8) + ENTRY_OVERHEAD for t in pool[0].values())
    small = FlightRecorder(before=50, after=0, triggers=(), max_bytes=20 * step_bytes)
    append_steps(where / "small.zarr", pool, 120, small, {119})
    sdoc = spikestore.open(where / "small.zarr").flight_recorder or {}
    fdoc = run.flight_recorder or {}
    return {"steps": n, "triggers": sorted(marks), "kept_steps": kept, "flight_bytes": flight_bytes,
            "flight_ring_peak": fdoc.get("ring_peak_bytes"), "flight_max_bytes": fdoc.get("max_bytes"),
            "flight_seconds": flight_s, "plain_steps": args.plain_steps, "plain_bytes": plain_bytes,
            "plain_seconds": plain_s, "everything_bytes_scaled": everything,
            "disk_ratio": flight_bytes / everything, "small_budget": small.max_bytes,
            "small_peak": sdoc.get("ring_peak_bytes"), "small_shrunk": sdoc.get("shrunk_steps"),
            "kept_with_small_budget": len(spikestore.open(where / "small.zarr")["output/2"])}


def append_cost(args: argparse.Namespace, where: Path) -> dict[str, Any]:
    pool = pool_of_spikes(2)[-1:]
    tensors = list(pool[0].items())
    repeats = 10 if args.quick else 60

    def median_ms(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3

    read = median_ms(lambda: [np.count_nonzero(t.numpy()) for _, t in tensors])
    with spikestore.Store(where / "append.zarr", mode="w", overwrite=True, flight_recorder=FlightRecorder()) as store:
        steps = itertools.count()

        def one_step() -> None:
            store.set_step(next(steps))
            for key, t in tensors:
                store.append(key, t)

        append = median_ms(one_step)
    return {"append_ms": append, "read_ms": read, "bytes": sum(t.numel() * t.element_size() for _, t in tensors)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    p.add_argument("--rounds", type=int, default=48, help="rounds of alternated blocks (unmonitored, read once, "
                   "armed; default 48)")
    p.add_argument("--block", type=int, default=3, help="steps per block (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each copy first")
    p.add_argument("--disk-steps", type=int, default=10_000)
    p.add_argument("--plain-steps", type=int, default=500)
    p.add_argument("--pool", type=int, default=16, help="distinct training steps cycled for the disk run")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.block, args.warmup = 6, 2, 1
        args.disk_steps, args.plain_steps, args.pool = 1000, 60, 4
    where = Path(tempfile.mkdtemp(prefix="bench_flight-"))
    try:
        t0 = time.perf_counter()
        cost = armed_vs_unmonitored(args, where)
        on_disk = disk(args, where)
        share = append_cost(args, where)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    mib = 1 << 20
    q, rq, pq = cost["ratio_quartiles"], cost["read_ratio_quartiles"], cost["pack_ratio_quartiles"]
    ci, pci, oci = cost["ratio_interval"], cost["pack_ratio_interval"], cost["armed_over_pack_interval"]
    print(f"\narmed, no trigger / unmonitored, blocks of {cost['block']} steps: median {cost['ratio_median']:.3f}x "
          f"over {cost['rounds']} rounds (95% interval of the median {ci[0]:.3f}-{ci[1]:.3f}; quartiles "
          f"{q[0]:.3f}-{q[1]:.3f}); unmonitored step {cost['unmonitored_step_s'] * 1e3:.0f} ms")
    print(f"read once (numpy) / unmonitored: {cost['read_ratio_median']:.3f}x (quartiles {rq[0]:.3f}-{rq[1]:.3f}); "
          f"pack only (the library's kernel, nothing kept) / unmonitored: {cost['pack_ratio_median']:.3f}x "
          f"(interval {pci[0]:.3f}-{pci[1]:.3f}; quartiles {pq[0]:.3f}-{pq[1]:.3f})")
    print(f"armed / pack only, per round: {cost['armed_over_pack_median']:.3f}x (interval {oci[0]:.3f}-{oci[1]:.3f}); "
          f"the armed store's writer: {cost['writer_cpu_per_step_s'] * 1e3:.2f} ms CPU a step")
    print(f"a step's appends (four LIF outputs, {share['bytes'] / 1e6:.1f} MB of float32) to an armed store: "
          f"{share['append_ms']:.2f} ms; reading them once: {share['read_ms']:.2f} ms "
          f"({share['append_ms'] / share['read_ms']:.2f}x)")
    print(f"ring: peak {cost['ring_peak_bytes'] / mib:.1f} MiB held of a {cost['max_bytes'] / mib:.0f} MiB budget "
          f"(before=50), {cost['shrunk_steps']} steps dropped early")
    print(f"ring of the {on_disk['steps']}-step run (before=50, full windows): peak "
          f"{on_disk['flight_ring_peak'] / mib:.1f} MiB of {on_disk['flight_max_bytes'] / mib:.0f} MiB")
    print(f"ring with a 20-step budget of {on_disk['small_budget'] / mib:.1f} MiB: peak "
          f"{on_disk['small_peak'] / mib:.1f} MiB, {on_disk['small_shrunk']} steps dropped early, "
          f"{on_disk['kept_with_small_budget']} steps kept around a trigger (of before+1 = 51)")
    print(f"on disk, {on_disk['steps']} steps, triggers at {on_disk['triggers']}: {on_disk['kept_steps']} steps kept, "
          f"{on_disk['flight_bytes'] / mib:.1f} MiB; recording everything "
          f"{on_disk['everything_bytes_scaled'] / mib:.0f} MiB (measured {on_disk['plain_steps']} steps, "
          f"{on_disk['plain_bytes'] / mib:.1f} MiB, scaled): {on_disk['disk_ratio']:.4f} of it")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "cost": cost,
                                         "disk": on_disk, "append": share}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
