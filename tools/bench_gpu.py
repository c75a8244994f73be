#!/usr/bin/env python
"""The reference workload on CUDA (docs/performance.md, with batch 128): what recording costs on a GPU.

Reuses ``tools/workload.py`` (the net, the batches, the training loop) and
``tools/workload_worker.run_variant`` (the variants) in one process, with no
per-step synchronisation for the loss. It measures, with the variants
alternated in every repeat:

* wall time of ``--steps`` training steps (store creation and ``close()``
  included, then ``torch.cuda.synchronize()``): unmonitored, SpikingJelly's
  in-memory ``OutputMonitor`` and spikestore recording every LIF layer every
  step; ratios to unmonitored are medians of the per-repeat ratios;
* GPU memory: ``torch.cuda.memory_allocated`` growth per step with the
  monitor alive, and the peak over the start (``max_memory_allocated``);
* synchronisations: ``torch.cuda.set_sync_debug_mode("warn")`` warnings
  counted over training steps with all five monitor kinds streaming to one
  store (target 0), next to the bare loop's own, then the same steps under
  ``"error"`` (the proof: they complete);
* a long run (``--long-steps``, >= 2,000 on a GPU): host RSS, the pinned
  pool's bytes and ``memory_allocated`` sampled along the way; flat means a
  least-squares slope over the second half near zero.

Without CUDA (``--device cpu``, what ``tools/gpu_check.py --dry-run`` uses)
it runs the same code on the CPU with tiny sizes, and the CUDA-only figures
are ``None``. Prints a JSON dict; ``tools/gpu_check.py`` turns it into the
table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import workload  # siblings in tools/: the script's folder is on sys.path
import workload_worker
from measure import remove_path, rss_bytes

MB = 1 << 20


def cuda(device: str) -> bool:
    return device.startswith("cuda")


def sync(device: str) -> None:
    if cuda(device):
        torch.cuda.synchronize()


def setup(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    net, opt = workload.build_net(seed=0)
    net.to(args.device)  # (in place: the optimiser keeps the same parameters)
    batches = workload.make_batches(4, seed=0, batch=args.batch, device=args.device)
    return net, opt, batches


def cycle(batches: list[Any], n: int) -> list[Any]:
    return [batches[i % len(batches)] for i in range(n)]


def timed(kind: str, args: argparse.Namespace, net: Any, opt: Any, batches: list[Any], path: Path,
          start: int) -> tuple[float, dict[str, float | None]]:
    """One run of ``kind``: seconds, and GPU memory growth per step / peak (MB) with the monitor alive."""
    sync(args.device)
    mem0 = torch.cuda.memory_allocated() if cuda(args.device) else None
    if mem0 is not None:
        torch.cuda.reset_peak_memory_stats()
    marks: list[float] = []
    t0 = time.perf_counter()
    _, monitor = workload_worker.run_variant(kind, net, opt, cycle(batches, args.steps), start=start,
                                             path=path, backend="zarr", marks=marks, sync=False)
    sync(args.device)
    seconds = time.perf_counter() - t0
    # The host runs ahead of the device until its launch queue is full, so in steady state
    # the interval between step starts is the step's real cost, without store open/close.
    steps = [b - a for a, b in itertools.pairwise(marks)]
    mem: dict[str, float | None] = {"growth_mb_per_step": None, "peak_over_start_mb": None,
                                    "p50_step_ms": 1e3 * statistics.median(steps[len(steps) // 2:])}
    if mem0 is not None:  # (update: p50_step_ms stays)
        mem.update(growth_mb_per_step=(torch.cuda.memory_allocated() - mem0) / MB / args.steps,
                   peak_over_start_mb=(torch.cuda.max_memory_allocated() - mem0) / MB)
    del monitor
    remove_path(path)
    return seconds, mem


def compare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Variants alternated (rotated order) in each repeat; medians of per-repeat ratios."""
    net, opt, batches = setup(args)
    kinds = ["unmonitored", "memory", "spikestore"]
    for kind in kinds:  # warm-up: kernels, allocator, the pinned pool, numba
        timed(kind, argparse.Namespace(**{**vars(args), "steps": 3}), net, opt, batches,
              work / f"warm-{kind}.zarr", 0)
    secs: dict[str, list[float]] = {k: [] for k in kinds}
    mems: dict[str, list[dict[str, float | None]]] = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind in kinds[r % 3:] + kinds[:r % 3]:
            s, m = timed(kind, args, net, opt, batches, work / f"{kind}-{r}.zarr", 0)
            secs[kind].append(s)
            mems[kind].append(m)
    base = secs["unmonitored"]
    out: dict[str, Any] = {"ms_per_step": {k: 1e3 * statistics.median(v) / args.steps for k, v in secs.items()}}
    out["ratio"] = {k: statistics.median(a / b for a, b in zip(v, base, strict=True)) for k, v in secs.items()}
    out["ratio_min_max"] = {k: [min(a / b for a, b in zip(v, base, strict=True)),
                                max(a / b for a, b in zip(v, base, strict=True))] for k, v in secs.items()}
    out["per_run"] = {k: {f: (None if v[0][f] is None else statistics.median(m[f] for m in v))
                             for f in v[0]} for k, v in mems.items()}
    steady = {k: [m["p50_step_ms"] for m in v] for k, v in mems.items()}
    out["p50_step_ratio"] = {k: statistics.median(a / b for a, b in zip(v, steady["unmonitored"], strict=True))
                             for k, v in steady.items()}
    return out


def all_kinds(net: Any, store: Any) -> list[Any]:
    """One monitor of each kind on every LIF layer, all streaming to ``store``."""
    from spikingjelly.activation_based import neuron

    from spikestore import monitor as ss

    return [ss.OutputMonitor(net, neuron.LIFNode, store=store), ss.InputMonitor(net, neuron.LIFNode, store=store),
            ss.AttributeMonitor("v", False, net, neuron.LIFNode, store=store),
            ss.GradInputMonitor(net, neuron.LIFNode, store=store),
            ss.GradOutputMonitor(net, neuron.LIFNode, store=store)]


def warmed_up(net: Any, opt: Any, batches: Any, path: Path | None) -> tuple[Any, list[Any], Any]:
    """A store at ``path`` with every monitor kind on ``net`` (``None``: unmonitored), after 3 warm-up
    steps and a device synchronisation: ``(store, monitors, on_step)``."""
    import spikestore

    store = spikestore.Store(path, mode="w") if path is not None else None
    mons = all_kinds(net, store) if store is not None else []
    on_step = store.set_step if store is not None else None
    workload.train_steps(net, opt, cycle(batches, 3), on_step=on_step, sync=False)
    torch.cuda.synchronize()
    return store, mons, on_step


def count_syncs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Synchronising CUDA calls per training step, bare and with every monitor kind streaming."""
    if not cuda(args.device):
        return {"unmonitored_per_step": None, "spikestore_per_step": None, "error_mode_steps": None}

    # The reference batch of 32: every kind streams ~50 MB of raw floats a step (inputs, gradients, v).
    net, opt, batches = setup(argparse.Namespace(**{**vars(args), "batch": workload.BATCH}))
    out: dict[str, Any] = {"batch": workload.BATCH}
    for label, monitored in (("unmonitored", False), ("spikestore", True)):
        store, mons, on_step = warmed_up(net, opt, batches, work / f"sync-{label}.zarr" if monitored else None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                workload.train_steps(net, opt, cycle(batches, args.sync_steps), on_step=on_step,
                                     start=3, sync=False)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        n = sum("synchroniz" in str(w.message) for w in caught)
        out[f"{label}_per_step"] = n / args.sync_steps
        if store is not None:  # the proof: the same steps complete under "error"
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                workload.train_steps(net, opt, cycle(batches, args.sync_steps), on_step=on_step,
                                     start=3 + args.sync_steps, sync=False)
                out["error_mode_steps"] = args.sync_steps
            except RuntimeError as exc:
                out["error_mode_steps"] = f"failed: {exc}"
            finally:
                torch.cuda.set_sync_debug_mode(0)
            for m in mons:
                m.remove_hooks()
            store.close()
    return out


def trace_syncs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The same count through PyTorch's GPU trace, which also sees C++ code (the backward pass).

    Stream and device synchronisations are counted on every thread (the writer
    makes none); event synchronisations are the writer's waits, for reference.
    The trace cannot be switched off again, so this runs last.
    """
    if not cuda(args.device) or not hasattr(torch._C, "_activate_gpu_trace"):
        return {"unmonitored_per_step": None, "spikestore_per_step": None, "writer_event_waits": None}
    from torch.cuda import _gpu_trace


    counts = {"sync": 0, "event": 0}

    def on_sync(*_: Any) -> None:
        counts["sync"] += 1

    def on_event(*_: Any) -> None:
        counts["event"] += 1

    _gpu_trace.register_callback_for_stream_synchronization(on_sync)
    _gpu_trace.register_callback_for_device_synchronization(on_sync)
    _gpu_trace.register_callback_for_event_synchronization(on_event)
    torch._C._activate_gpu_trace()
    net, opt, batches = setup(argparse.Namespace(**{**vars(args), "batch": workload.BATCH}))
    out: dict[str, Any] = {}
    for label, monitored in (("unmonitored", False), ("spikestore", True)):
        store, mons, on_step = warmed_up(net, opt, batches, work / f"trace-{label}.zarr" if monitored else None)
        counts.update(sync=0, event=0)
        workload.train_steps(net, opt, cycle(batches, args.sync_steps), on_step=on_step, start=3, sync=False)
        if store is not None:
            store.flush()  # (the writer's event waits for these steps)
        out[f"{label}_per_step"] = counts["sync"] / args.sync_steps
        if store is not None:
            out["writer_event_waits"] = counts["event"]
            for m in mons:
                m.remove_hooks()
            store.close()
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs``, over the second half (after the warm-up settles)."""
    h = len(xs) // 2
    xs, ys = xs[h:], ys[h:]
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def long_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """spikestore alone for ``--long-steps`` steps; host RSS, pinned and GPU bytes sampled."""
    from spikingjelly.activation_based import neuron

    import spikestore
    from spikestore import monitor as ss

    net, opt, batches = setup(args)
    path = work / "long.zarr"
    store = spikestore.Store(path, mode="w")
    mon = ss.OutputMonitor(net, neuron.LIFNode, store=store)
    pool = store.pinned_pool
    every = max(1, args.long_steps // 40)
    samples: dict[str, list[float]] = {"step": [], "rss": [], "pinned": [], "gpu": []}
    t0 = time.perf_counter()
    for start in range(0, args.long_steps, every):
        workload.train_steps(net, opt, cycle(batches, every), on_step=store.set_step, start=start, sync=False)
        samples["step"].append(start + every)
        samples["rss"].append(rss_bytes())
        samples["pinned"].append(pool.allocated_bytes)
        samples["gpu"].append(torch.cuda.memory_allocated() if cuda(args.device) else 0)
    store.flush()
    sync(args.device)
    seconds = time.perf_counter() - t0
    stats = pool.stats()
    mon.remove_hooks()
    store.close()
    records = sum(len(spikestore.open(path)[k]) for k in spikestore.open(path).streams)
    remove_path(path)
    per_1000 = {k: 1000 * slope(samples["step"], samples[k]) for k in ("rss", "pinned", "gpu")}
    return {"steps": args.long_steps, "seconds": seconds, "records": records,
            "rss_mb": [samples["rss"][0] / MB, samples["rss"][-1] / MB],
            "rss_slope_kb_per_1000_steps": per_1000["rss"] / 1024,
            "pinned_mb": [samples["pinned"][0] / MB, max(samples["pinned"]) / MB, samples["pinned"][-1] / MB],
            "pinned_slope_kb_per_1000_steps": per_1000["pinned"] / 1024,
            "gpu_slope_kb_per_1000_steps": per_1000["gpu"] / 1024 if cuda(args.device) else None,
            "pool": stats, "queue_budget_mb": pool.max_bytes / MB}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sync-steps", type=int, default=10)
    p.add_argument("--long-steps", type=int, default=2000)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, to check the script itself (CPU)")
    args = p.parse_args(argv)
    if args.dry_run:
        args.batch, args.steps, args.repeats, args.sync_steps, args.long_steps = 2, 4, 3, 2, 40
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="spikestore-gpu-bench-"))
    result: dict[str, Any] = {"device": args.device, "batch": args.batch, "steps": args.steps,
                              "repeats": args.repeats, "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name() if cuda(args.device) else None,
                              "values_per_step": workload.VALUES_PER_STEP * args.batch // workload.BATCH}
    t0 = time.perf_counter()
    result["compare"] = compare(args, work)
    result["syncs"] = count_syncs(args, work)
    result["long"] = long_run(args, work)
    result["trace_syncs"] = trace_syncs(args, work)  # (last: the trace stays on)
    result["seconds"] = time.perf_counter() - t0
    result["threads_left"] = threading.active_count()
    remove_path(work)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
