"""Flight recorder figures (docs/flight-recorder.md §8): its cost armed, its ring's memory, its bytes on disk.

Three measurements, in one process:

1. **Armed, no trigger, against unmonitored.** The reference workload
   (``tools/workload.py``: SpikingJelly CNN, CPU, T=8, batch 32) trains
   ``--steps`` steps (after ``--warmup`` untimed ones) unmonitored, and with
   ``spikestore.monitor.OutputMonitor`` on a store armed with
   ``FlightRecorder()`` (defaults: before=50, after=10, "nonfinite") that
   never fires. Pairs alternate their order; the report gives the median of
   the per-pair ratios of wall time (``close()`` included) and their range.
   A third run in each round, ``read``, is the floor any recorder that
   looks at every value pays: a forward hook on each LIF layer that only
   reads its output once (``np.count_nonzero``), storing nothing.
2. **The ring against its budget.** Of the armed runs: the most bytes the
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
   (``np.count_nonzero``). Unlike the ratios of whole training runs, whose
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
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # (tools/ is on sys.path above: not a package)

import spikestore
from spikestore import FlightRecorder
from spikestore._write.flight_ring import ENTRY_OVERHEAD


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def train(kind: str, batches: list[Any], warmup: int, where: Path, rec: FlightRecorder | None = None
          ) -> tuple[float, float, dict[str, Any] | None]:
    """Train ``batches`` (the first ``warmup`` untimed): seconds per timed step (``close()`` included), the
    median step's seconds, and the flight document."""
    from spikingjelly.activation_based import neuron

    from spikestore import monitor as ss

    net, opt = workload.build_net(seed=0)
    workload.train_steps(net, opt, batches[:warmup])
    timed = batches[warmup:]
    marks: list[float] = []
    store = None
    path = where / "armed.zarr"

    def on_step(step: int) -> None:
        marks.append(time.perf_counter())
        if store is not None:
            store.set_step(step)

    t0 = time.perf_counter()
    hooks = []
    if kind == "armed":
        store = spikestore.Store(path, mode="w", overwrite=True, flight_recorder=rec)
        m = ss.OutputMonitor(net, neuron.LIFNode, store=store)
    elif kind == "read":
        def read_once(module: Any, args: Any, out: Any) -> None:
            np.count_nonzero(out.detach().numpy())

        hooks = [mod.register_forward_hook(read_once) for mod in net.modules() if isinstance(mod, neuron.LIFNode)]
    workload.train_steps(net, opt, timed, start=warmup, on_step=on_step)
    marks.append(time.perf_counter())
    for hook in hooks:
        hook.remove()
    if store is not None:
        m.remove_hooks()
        store.close()
    elapsed = (time.perf_counter() - t0) / len(timed)
    step = statistics.median(b - a for a, b in itertools.pairwise(marks))
    if store is None:
        return elapsed, step, None
    run = spikestore.open(path)
    assert run.streams == [] and run.triggers == [], "armed without a trigger must write no record"
    return elapsed, step, run.flight_recorder


def armed_vs_unmonitored(args: argparse.Namespace, where: Path) -> dict[str, Any]:
    batches = workload.make_batches(args.warmup + args.steps, seed=0)
    spikestore.Store(where / "prime.zarr").close()  # loads the compiled kernels once, outside every timing
    rec = FlightRecorder()
    ratios, step_ratios, read_ratios, docs = [], [], [], []
    kinds = ("unmonitored", "read", "armed")
    for rep in range(args.repeats):
        order = kinds if rep % 2 == 0 else kinds[::-1]
        wall: dict[str, float] = {}
        step: dict[str, float] = {}
        for kind in order:
            wall[kind], step[kind], doc = train(kind, batches, args.warmup, where, rec)
            if doc is not None:
                docs.append(doc)
        ratios.append(wall["armed"] / wall["unmonitored"])
        step_ratios.append(step["armed"] / step["unmonitored"])
        read_ratios.append(step["read"] / step["unmonitored"])
        print(f"[round {rep}] {order[0]} first: unmonitored {wall['unmonitored'] * 1e3:.1f} ms/step, "
              f"armed {wall['armed'] * 1e3:.1f} ms/step, ratio {ratios[-1]:.3f} "
              f"(median step {step_ratios[-1]:.3f}; read once {read_ratios[-1]:.3f})", flush=True)
    peak = max(d["ring_peak_bytes"] for d in docs)
    return {"pairs": len(ratios), "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "step_ratio_median": statistics.median(step_ratios),
            "read_ratio_median": statistics.median(read_ratios), "read_ratio_min": min(read_ratios),
            "read_ratio_max": max(read_ratios),
            "ring_peak_bytes": peak, "max_bytes": rec.max_bytes,
            "shrunk_steps": max(d["shrunk_steps"] for d in docs)}


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
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=8, help="alternated rounds (unmonitored, read once, armed)")
    p.add_argument("--disk-steps", type=int, default=10_000)
    p.add_argument("--plain-steps", type=int, default=500)
    p.add_argument("--pool", type=int, default=16, help="distinct training steps cycled for the disk run")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.repeats = 5, 1, 2
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
    print(f"\narmed, no trigger / unmonitored: median {cost['ratio_median']:.3f}x over {cost['pairs']} pairs "
          f"[{cost['ratio_min']:.3f}-{cost['ratio_max']:.3f}]; median of the per-pair ratios of the median step "
          f"{cost['step_ratio_median']:.3f}x")
    print(f"read once (the floor of any recorder that looks at every value) / unmonitored, median step: "
          f"{cost['read_ratio_median']:.3f}x [{cost['read_ratio_min']:.3f}-{cost['read_ratio_max']:.3f}]")
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
