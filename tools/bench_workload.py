#!/usr/bin/env python
"""Benchmark recording the reference workload (DESIGN.md §6).

Variants, each recording the output of every LIF layer at every step:

``unmonitored``
    The bare training loop (the baseline).
``memory``
    SpikingJelly's in-memory ``monitor.OutputMonitor(net, neuron.LIFNode)``.
``zlib``
    The tutorial's section 7 hook: ``OutputMonitor`` with a
    ``function_on_output`` that bit-packs (``np.packbits``, little bit order,
    on ``.cpu().numpy()``) and ``zlib.compress``-es every output, keeping the
    bytes in RAM.
``spikestore``
    ``spikestore.monitor.OutputMonitor(net, neuron.LIFNode, store=store)``
    (emulated with plain forward hooks calling ``store.append`` when
    ``spikestore.monitor`` cannot be imported; the results say which ran).
    Its wall time includes ``store.close()``, i.e. everything is on disk.

How it is measured
------------------
* Every variant-repeat runs in its **own subprocess** (this script re-invoked
  with ``--_worker``). That makes peak RSS a clean per-run number (a
  process's high-water mark cannot be lowered again, and the in-memory
  monitor leaves a fragmented heap behind), and it gives every run the same
  fresh start. Peak RSS growth = VmHWM after the timed phase (reset with
  ``/proc/self/clear_refs`` just before it; a 5 ms psutil sampling thread is
  the fallback where that is not allowed) minus VmRSS at the start of the
  timed phase.
* Each worker builds the net with the same seed, uses the same batches
  (``workload.make_batches(warmup + steps, seed)``), warms up with
  ``--warmup`` steps of the *same* variant (imports, allocator, a throw-away
  store), then times: monitor/store creation, ``--steps`` training steps,
  and ``remove_hooks()`` / ``store.close()``. ``torch.manual_seed`` is called
  again right before the timed phase. Thread counts are left at torch's
  default, identical for all variants (recorded in the JSON).
* Pairs alternate: each repeat runs (unmonitored, V) for every monitored
  variant V, the order inside a pair flipping from pair to pair and the
  order of the variants rotating from repeat to repeat. The ratio of V is the
  median over its pairs of ``ms_V / ms_unmonitored`` of the same pair, so a
  slow patch of the (shared, noisy) machine hits both halves of a ratio.
* After the timed phase (not timed) each recording variant is checked: the
  number of records and the number of ones (spikes) read back must match
  between ``memory``, ``zlib`` and ``spikestore``; the losses of all
  variants must be identical (the hooks must not change training).

``--long N`` instead runs spikestore alone for N steps, printing RSS every
100 steps, and reports RSS growth after ``--long-warmup`` steps (plus a
least-squares slope), to show memory stays flat on a long run.

Examples
--------
::

    python tools/bench_workload.py --steps 20 --repeats 3 --out-dir runs/bench
    python tools/bench_workload.py --long 2000 --out-dir runs/bench
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MONITORED = ("memory", "zlib", "spikestore")
VARIANTS = ("unmonitored", *MONITORED)
MB = 1 << 20


# ----------------------------------------------------------------------------------------
# memory measurement
# ----------------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    v = _status_kb("VmRSS")
    if v is not None:
        return v
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """Peak RSS of this process over a window.

    Uses the kernel's high-water mark (VmHWM), reset by writing 5 to
    /proc/self/clear_refs at :meth:`start`; exact, and costs nothing while
    the workload runs. Where that is not possible, falls back to a thread that
    samples RSS with psutil every 5 ms (which can miss short spikes).
    """

    def __init__(self) -> None:
        self.method = ""
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            if _status_kb("VmHWM") is None:
                raise OSError("no VmHWM")
            self.method = "VmHWM"
            return
        except OSError:
            pass
        import psutil

        proc = psutil.Process()
        self.method = "psutil-5ms"
        self._peak = proc.memory_info().rss

        def loop() -> None:
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, proc.memory_info().rss)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        if self.method == "VmHWM":
            return max(_status_kb("VmHWM") or 0, rss_bytes())
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return max(self._peak, rss_bytes())


def disk_bytes(path: Path) -> int:
    """Apparent size of a store: the file, or every file under the directory."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


# ----------------------------------------------------------------------------------------
# the recording variants (run inside a worker)
# ----------------------------------------------------------------------------------------
def zlib_compress(spike: Any) -> tuple[bytes, Any, tuple[int, ...], int]:
    """The tutorial's section 7 hook: float -> bits (little order) -> zlib, kept in RAM."""
    import numpy as np

    a = spike.detach().cpu().numpy()
    bits = np.packbits(a.reshape(-1).astype(np.bool_), bitorder="little")
    padding = (-a.size) % 8
    return zlib.compress(bits.tobytes()), spike.dtype, tuple(spike.shape), padding


def zlib_decompress_ones(item: tuple[bytes, Any, tuple[int, ...], int]) -> int:
    import numpy as np

    raw = np.frombuffer(zlib.decompress(item[0]), dtype=np.uint8)
    return int(np.bitwise_count(raw).sum())  # padding bits are zero


def spikestore_impl(requested: str) -> tuple[str, str | None]:
    """Which spikestore recording path to use: ("monitor"|"hook", why-not-monitor)."""
    if requested == "hook":
        return "hook", "forced by --spikestore-impl hook"
    try:
        from spikestore import monitor as ss_monitor

        ss_monitor.OutputMonitor  # noqa: B018 - must exist
    except Exception as e:  # noqa: BLE001 - monitor.py may be missing or half-written
        if requested == "monitor":
            raise
        return "hook", f"{type(e).__name__}: {e}"
    return "monitor", None


class _HookRecorder:
    """Stand-in for spikestore.monitor.OutputMonitor: forward hooks -> Store.append."""

    def __init__(self, net: Any, instance: type, store: Any) -> None:
        self.hooks = []
        for name, module in net.named_modules():
            if isinstance(module, instance):
                self.hooks.append(module.register_forward_hook(self._hook(store, f"output/{name}")))

    @staticmethod
    def _hook(store: Any, key: str) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            store.append(key, output)  # returns a bool: a hook must return None

        return hook

    def remove_hooks(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks.clear()


def store_path(out_dir: Path, tag: str, backend: str) -> Path:
    return out_dir / "stores" / (tag + (".h5" if backend == "hdf5" else ".zarr"))


def run_variant(variant: str, net: Any, opt: Any, batches: list[Any], *, start: int,
                path: Path | None, backend: str, impl: str,
                marks: list[float] | None = None) -> tuple[list[float], Any]:
    """Create the monitor (and store), train over ``batches``, remove hooks / close.

    Everything here is what the timed phase measures. Returns the losses and
    the monitor object (whose records the caller inspects afterwards).
    ``marks`` (if given) gets ``time.perf_counter()`` at the start of every
    step and once after the last one, for per-step times (a noise diagnostic).
    """
    import workload

    def tick(_step: int) -> None:
        if marks is not None:
            marks.append(time.perf_counter())

    def tick_then(f: Any) -> Any:
        def on_step(step: int) -> None:
            tick(step)
            f(step)

        return on_step
    from spikingjelly.activation_based import monitor as sj_monitor
    from spikingjelly.activation_based import neuron

    if variant == "unmonitored":
        losses = workload.train_steps(net, opt, batches, on_step=tick, start=start)
        tick(-1)
        return losses, None
    if variant == "memory":
        m = sj_monitor.OutputMonitor(net, neuron.LIFNode)
        losses = workload.train_steps(net, opt, batches, on_step=tick, start=start)
        tick(-1)
        m.remove_hooks()
        return losses, m
    if variant == "zlib":
        m = sj_monitor.OutputMonitor(net, neuron.LIFNode, function_on_output=zlib_compress)
        losses = workload.train_steps(net, opt, batches, on_step=tick, start=start)
        tick(-1)
        m.remove_hooks()
        return losses, m
    if variant == "spikestore":
        import spikestore

        assert path is not None
        store = spikestore.Store(path, mode="w", overwrite=True, backend=backend)
        if impl == "monitor":
            from spikestore import monitor as ss_monitor

            m = ss_monitor.OutputMonitor(net, neuron.LIFNode, store=store)
        else:
            m = _HookRecorder(net, neuron.LIFNode, store)
        losses = workload.train_steps(net, opt, batches, on_step=tick_then(store.set_step),
                                      start=start)
        tick(-1)
        m.remove_hooks()
        store.close()
        return losses, m
    raise ValueError(variant)


def inspect_records(variant: str, m: Any, path: Path | None, backend: str,
                    steps: range) -> dict[str, Any]:
    """Untimed: how much the variant holds, and how many records / ones it recorded."""
    out: dict[str, Any] = {}
    if variant == "memory":
        import torch

        storages: dict[int, int] = {}
        tensor_bytes = ones = 0
        for r in m.records:
            tensor_bytes += r.numel() * r.element_size()
            st = r.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
            ones += int(torch.count_nonzero(r))
        out.update(records=len(m.records), ones=ones, held_bytes=tensor_bytes,
                   held_storage_bytes=sum(storages.values()),
                   records_keep_graph=any(r.grad_fn is not None for r in m.records))
    elif variant == "zlib":
        out.update(records=len(m.records),
                   ones=sum(zlib_decompress_ones(r) for r in m.records),
                   held_bytes=sum(len(r[0]) for r in m.records))
    elif variant == "spikestore":
        import numpy as np
        import spikestore

        assert path is not None
        out["disk_bytes"] = disk_bytes(path)
        run = spikestore.open(path, backend=backend)
        try:
            records = ones = 0
            streams = list(run.streams)
            bad_steps = []
            for key in streams:
                s = run[key]
                records += len(s)
                if list(s.steps) != list(steps):
                    bad_steps.append(key)
                for i in range(len(s)):
                    ones += int(np.count_nonzero(s[i]))
            out.update(records=records, ones=ones, streams=streams, bad_steps=bad_steps)
        finally:
            run.close()
    return out


def worker_main(cfg: dict[str, Any]) -> dict[str, Any]:
    """One variant-repeat, in a fresh process. Returns the result dict."""
    sys.path.insert(0, str(HERE))
    import torch
    import workload

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    variant = cfg["variant"]
    out_dir = Path(cfg["out_dir"])
    backend = cfg["backend"]
    impl, impl_why = ("-", None)
    if variant == "spikestore":
        impl, impl_why = spikestore_impl(cfg["spikestore_impl"])

    warmup, steps = cfg["warmup"], cfg["steps"]
    batches = workload.make_batches(warmup + steps, seed=cfg["seed"])
    net, opt = workload.build_net(seed=cfg["seed"])

    wpath = store_path(out_dir, f"warmup-{variant}-{cfg['tag']}", backend)
    if warmup:
        _, m = run_variant(variant, net, opt, batches[:warmup], start=0, path=wpath,
                           backend=backend, impl=impl)
        del m
    remove_path(wpath)
    gc.collect()

    path = store_path(out_dir, f"{variant}-{cfg['tag']}", backend) if variant == "spikestore" else None
    torch.manual_seed(cfg["seed"] + 1)
    peak = PeakRSS()
    rss0 = rss_bytes()
    peak.start()
    marks: list[float] = []
    t0 = time.perf_counter()
    losses, m = run_variant(variant, net, opt, batches[warmup:], start=warmup, path=path,
                            backend=backend, impl=impl, marks=marks)
    wall = time.perf_counter() - t0
    peak_rss = peak.stop()
    rss1 = rss_bytes()
    with torch.no_grad():  # the hooks must not change training: compared across runs
        param_sum = float(sum(p.double().abs().sum() for p in net.parameters()))

    res: dict[str, Any] = {
        "variant": variant, "tag": cfg["tag"], "steps": steps, "warmup": warmup,
        "wall_s": wall, "ms_per_step": wall / steps * 1e3,
        # per-step times: noise diagnostic only (they leave out monitor/store creation and
        # close; the headline number is ms_per_step, the whole wall time / steps)
        "step_ms": [round((b - a) * 1e3, 2) for a, b in zip(marks, marks[1:])],
        "step_ms_median": statistics.median([(b - a) * 1e3 for a, b in zip(marks, marks[1:])]),
        "setup_ms": (marks[0] - t0) * 1e3, "teardown_ms": (t0 + wall - marks[-1]) * 1e3,
        "rss_start_mb": rss0 / MB, "rss_end_mb": rss1 / MB, "peak_rss_mb": peak_rss / MB,
        "peak_rss_growth_mb": (peak_rss - rss0) / MB, "rss_method": peak.method,
        "losses": losses, "param_abs_sum": param_sum, "torch_threads": torch.get_num_threads(),
        "spikestore_impl": impl, "spikestore_impl_why": impl_why,
    }
    res.update(inspect_records(variant, m, path, backend, range(warmup, warmup + steps)))
    if path is not None and not cfg["keep_stores"]:
        remove_path(path)
    return res


# ----------------------------------------------------------------------------------------
# --long mode (runs inside a worker)
# ----------------------------------------------------------------------------------------
def long_main(cfg: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from itertools import cycle, islice

    import spikestore
    import torch
    import workload
    from spikingjelly.activation_based import neuron

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    n, every, warm = cfg["long"], 100, cfg["long_warmup"]
    backend = cfg["backend"]
    impl, impl_why = spikestore_impl(cfg["spikestore_impl"])
    pool = workload.make_batches(min(n, 64), seed=cfg["seed"])  # cycled: bounded input memory
    net, opt = workload.build_net(seed=cfg["seed"])
    torch.manual_seed(cfg["seed"] + 1)
    path = store_path(Path(cfg["out_dir"]), "long", backend)
    gc.collect()
    rss_start = rss_bytes()
    store = spikestore.Store(path, mode="w", overwrite=True, backend=backend)
    if impl == "monitor":
        from spikestore import monitor as ss_monitor

        m = ss_monitor.OutputMonitor(net, neuron.LIFNode, store=store)
    else:
        m = _HookRecorder(net, neuron.LIFNode, store)

    samples: list[dict[str, float]] = []
    t0 = time.perf_counter()
    print(f"[long] spikestore ({impl}, {backend}) for {n} steps; RSS at start "
          f"{rss_start / MB:.0f} MiB", flush=True)
    print(f"{'step':>6} {'RSS MiB':>8} {'ms/step':>8} {'disk MiB':>8} {'queue MiB':>10}",
          flush=True)
    last = [t0, 0]

    def sample(done: int) -> None:  # ``done`` steps have completed
        now = time.perf_counter()
        rss = rss_bytes() / MB
        ms = (now - last[0]) / max(done - last[1], 1) * 1e3
        last[:] = [now, done]
        d = disk_bytes(path) / MB
        # Diagnostic only, private and best-effort: bytes handed to the writer, not yet written.
        q = getattr(getattr(store, "_writer", None), "_queue", None)
        pend = getattr(q, "pending", None)
        pend_mb = pend / MB if isinstance(pend, (int, float)) else float("nan")
        samples.append({"step": done, "rss_mb": rss, "ms_per_step": ms, "disk_mb": d,
                        "pending_mb": pend_mb})
        print(f"{done:6d} {rss:8.1f} {ms:8.1f} {d:8.1f} {pend_mb:10.1f}", flush=True)

    def on_step(step: int) -> None:
        if step % every == 0 and step > 0:
            sample(step)
        store.set_step(step)

    losses = workload.train_steps(net, opt, islice(cycle(pool), n), on_step=on_step)
    sample(n)  # after the final step, before close
    t_train = time.perf_counter() - t0
    rss_before_close = rss_bytes()
    m.remove_hooks()
    tc = time.perf_counter()
    store.close()
    close_s = time.perf_counter() - tc
    wall = time.perf_counter() - t0
    rss_end = rss_bytes()
    disk = disk_bytes(path)
    run = spikestore.open(path, backend=backend)
    try:
        records = sum(len(run[k]) for k in run.streams)
    finally:
        run.close()

    after = [s for s in samples if s["step"] >= warm]
    res: dict[str, Any] = {
        "mode": "long", "steps": n, "warmup_steps": warm, "spikestore_impl": impl,
        "spikestore_impl_why": impl_why, "backend": backend, "samples": samples,
        "rss_start_mb": rss_start / MB, "rss_before_close_mb": rss_before_close / MB,
        "rss_end_mb": rss_end / MB, "ms_per_step": wall / n * 1e3,
        "train_s": t_train, "close_s": close_s, "disk_bytes": disk, "records": records,
        "expected_records": n * len(workload.LIF_SHAPES), "final_loss": losses[-1],
    }
    if after:
        r = [s["rss_mb"] for s in after]
        res["rss_after_warmup_mb"] = r[0]
        res["growth_after_warmup_mb"] = r[-1] - r[0]
        res["max_growth_after_warmup_mb"] = max(r) - r[0]
        if len(after) >= 2:
            xs = [s["step"] for s in after]
            mx, my = statistics.fmean(xs), statistics.fmean(r)
            sxx = sum((x - mx) ** 2 for x in xs)
            res["slope_mb_per_1000_steps"] = (
                sum((x - mx) * (y - my) for x, y in zip(xs, r)) / sxx * 1000 if sxx else 0.0)
    if not cfg["keep_stores"]:
        remove_path(path)
    return res


# ----------------------------------------------------------------------------------------
# the parent: orchestration and report
# ----------------------------------------------------------------------------------------
def spawn(cfg: dict[str, Any], out_dir: Path, stream_stdout: bool = False,
          timeout: float | None = None) -> dict[str, Any]:
    res_file = out_dir / "stores" / f"result-{cfg.get('variant', 'long')}-{cfg['tag']}.json"
    res_file.parent.mkdir(parents=True, exist_ok=True)
    cfg = {**cfg, "result_file": str(res_file)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(cfg)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(cmd, env=env, cwd=str(REPO), timeout=timeout, text=True,
                          stdout=None if stream_stdout else subprocess.PIPE,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0 or not res_file.exists():
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-25:])
        raise RuntimeError(f"worker {cfg.get('variant', 'long')} {cfg['tag']} failed "
                           f"(exit {proc.returncode}):\n{tail}")
    res = json.loads(res_file.read_text())
    res_file.unlink()
    # Surface warnings from the worker (e.g. dropped records), minus torch's Triton notice.
    warn = [ln for ln in (proc.stderr or "").splitlines()
            if "arning" in ln and "Triton not available" not in ln]
    if warn:
        res["stderr_warnings"] = warn
        for ln in warn:
            print(f"  worker {cfg.get('variant', 'long')} {cfg['tag']}: {ln}", flush=True)
    return res


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "spikestore"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return None


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    def ver(p: str) -> str | None:
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "torch": ver("torch"), "spikingjelly": ver("spikingjelly"), "zarr": ver("zarr"),
            "numpy": ver("numpy"), "h5py": ver("h5py"), "spikestore": ver("spikestore"),
            "spikestore_git": git_commit()}


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / MB:.1f} MiB" if n >= 0.1 * MB else f"{n / 1024:.1f} KiB"


def summarize(runs: list[dict[str, Any]], pairs: list[dict[str, Any]], values_per_step: int
              ) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for v in VARIANTS:
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        ratios = [p["ratio"] for p in pairs if p["variant"] == v]
        ms = _med([r["ms_per_step"] for r in rs])
        steps = rs[0]["steps"]
        s: dict[str, Any] = {
            "runs": len(rs),
            "ms_per_step_median": ms,
            "ms_per_step_all": [round(r["ms_per_step"], 2) for r in rs],
            "ratio_median": _med(ratios) if v != "unmonitored" else 1.0,
            "step_ms_p50_median": _med([r["step_ms_median"] for r in rs]),
            "ratio_step_p50_median": (_med([p["ratio_step_p50"] for p in pairs
                                            if p["variant"] == v]) if v != "unmonitored" else 1.0),
            "setup_ms_median": _med([r["setup_ms"] for r in rs]),
            "teardown_ms_median": _med([r["teardown_ms"] for r in rs]),
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "peak_rss_growth_mb_median": _med([r["peak_rss_growth_mb"] for r in rs]),
            "peak_rss_growth_mb_per_step": _med([r["peak_rss_growth_mb"] for r in rs]) / steps,
            "recorded_values_per_s": values_per_step / (ms / 1e3) if v != "unmonitored" else None,
        }
        if "held_bytes" in rs[0]:
            s["held_bytes_median"] = _med([r["held_bytes"] for r in rs])
        if "held_storage_bytes" in rs[0]:
            s["held_storage_bytes_median"] = _med([r["held_storage_bytes"] for r in rs])
        if "disk_bytes" in rs[0]:
            s["disk_bytes_median"] = _med([r["disk_bytes"] for r in rs])
        if "ones" in rs[0]:
            s["spikes_per_step"] = rs[0]["ones"] / steps
            s["records"] = rs[0]["records"]
        if v == "spikestore":
            s["spikestore_impl"] = sorted({r["spikestore_impl"] for r in rs})
            s["spikestore_impl_why"] = sorted({str(r["spikestore_impl_why"]) for r in rs})
        summary[v] = s
    return summary


def checks(runs: list[dict[str, Any]], expected_records: int) -> list[str]:
    """Consistency problems (empty list = all good)."""
    problems: list[str] = []
    ref = runs[0]["losses"]
    for r in runs:
        if r["losses"] != ref:
            diff = max(abs(a - b) for a, b in zip(r["losses"], ref))
            problems.append(f"{r['variant']} {r['tag']}: losses differ from "
                            f"{runs[0]['variant']} {runs[0]['tag']} (max |diff| {diff:.3g})")
    psums = {r["param_abs_sum"] for r in runs}
    if len(psums) > 1:
        problems.append(f"final parameters differ between runs (sum |p|: {sorted(psums)})")
    ones = {(r["variant"], r["ones"]) for r in runs if "ones" in r}
    if len({o for _, o in ones}) > 1:
        problems.append(f"recorded spike counts differ between variants: {sorted(ones)}")
    for r in runs:
        if r.get("bad_steps"):
            problems.append(f"{r['variant']} {r['tag']}: streams {r['bad_steps']} are not "
                            "keyed by the steps passed to store.set_step")
        if "records" in r and r["records"] != expected_records:
            problems.append(f"{r['variant']} {r['tag']}: {r['records']} records, "
                            f"expected {expected_records}")
    if len({r["torch_threads"] for r in runs}) > 1:
        problems.append("torch thread counts differ between runs")
    return problems


def noise_warnings(runs: list[dict[str, Any]]) -> list[str]:
    """Signs that the machine was busy: the baseline's speed is not stable."""
    out: list[str] = []
    base = [r["step_ms_median"] for r in runs if r["variant"] == "unmonitored"]
    if len(base) >= 2 and max(base) > 1.3 * min(base):
        out.append(f"unmonitored step p50 ranged {min(base):.0f}-{max(base):.0f} ms across "
                   "runs: the machine was busy; trust the pair ratios' median, not single "
                   "numbers (or rerun / use more --repeats, or --threads 1)")
    for r in runs:
        st = r["step_ms"]
        if len(st) >= 3 and max(st) > 3 * statistics.median(st):
            out.append(f"{r['variant']} {r['tag']}: one step took {max(st):.0f} ms vs a "
                       f"median of {statistics.median(st):.0f} ms")
    return out


def print_table(summary: dict[str, Any], args: argparse.Namespace, values_per_step: int) -> None:
    print()
    print(f"Reference workload, {args.steps} timed steps per run (after {args.warmup} warm-up), "
          f"{args.repeats} repeat(s), backend={args.backend}; medians over runs, ratio = median "
          "of per-pair ratios [min-max]")
    print(f"LIF values recorded per step: {values_per_step:,} "
          f"({values_per_step * 4 / MB:.1f} MiB as float32)")
    print("ms/step = whole timed wall (monitor/store creation + steps + remove_hooks/close) / "
          "steps; p50 step = median single-step time (noise diagnostic, leaves out "
          "creation and close); close ms = remove_hooks (+ store.close())")
    hdr = (f"{'variant':<12} {'n':>2} {'ms/step':>8} {'ratio':>6} {'[min-max]':>13} "
           f"{'p50 step':>8} {'p50 ratio':>9} {'close ms':>8} "
           f"{'peak RSS +MiB':>12} {'MiB/step':>8} {'held/on disk':>13} {'spikes/step':>12} "
           f"{'Mvals/s':>8}")
    print(hdr)
    print("-" * len(hdr))
    for v, s in summary.items():
        rng = (f"[{s['ratio_min']:.2f}-{s['ratio_max']:.2f}]" if s["ratio_min"] is not None
               else "")
        held = s.get("disk_bytes_median", s.get("held_bytes_median"))
        sp = s.get("spikes_per_step")
        mv = s["recorded_values_per_s"]
        print(f"{v:<12} {s['runs']:>2} {s['ms_per_step_median']:8.1f} {s['ratio_median']:6.2f} "
              f"{rng:>13} {s['step_ms_p50_median']:8.1f} {s['ratio_step_p50_median']:9.2f} "
              f"{s['teardown_ms_median']:8.1f} {s['peak_rss_growth_mb_median']:12.1f} "
              f"{s['peak_rss_growth_mb_per_step']:8.2f} {_fmt_bytes(held):>13} "
              f"{(f'{sp:,.0f}' if sp is not None else '-'):>12} "
              f"{(f'{mv / 1e6:.1f}' if mv else '-'):>8}")
    if "memory" in summary and "held_storage_bytes_median" in summary["memory"]:
        m = summary["memory"]
        print(f"(memory: records hold {_fmt_bytes(m['held_bytes_median'])} of tensors, "
              f"{_fmt_bytes(m['held_storage_bytes_median'])} of underlying storage)")
    if "spikestore" in summary:
        s = summary["spikestore"]
        print(f"(spikestore recorded via: {', '.join(s['spikestore_impl'])}"
              + (f"; monitor not used because: {'; '.join(s['spikestore_impl_why'])}"
                 if s["spikestore_impl"] != ["monitor"] else "") + ")")


def check_backend(args: argparse.Namespace) -> None:
    """Fail early, with a clear message, when spikestore (or its backend) is not there."""
    if args._worker or (args.long == 0 and "spikestore" not in args.variants):
        return
    import importlib

    mod = "spikestore.backends.hdf5" if args.backend == "hdf5" else "spikestore.backends.zarr"
    try:
        importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001
        raise SystemExit(f"--backend {args.backend}: cannot import {mod} ({type(e).__name__}: "
                         f"{e}); is that backend written yet / its extra installed?") from None


def bench_main(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    import workload

    values_per_step = workload.VALUES_PER_STEP
    n_layers = len(workload.LIF_SHAPES)
    base = {"steps": args.steps, "warmup": args.warmup, "seed": args.seed, "threads": args.threads,
            "out_dir": str(out_dir), "backend": args.backend,
            "spikestore_impl": args.spikestore_impl, "keep_stores": args.keep_stores}
    variants = [v for v in MONITORED if v in args.variants]
    runs: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    timeout = 120 + 20 * (args.steps + args.warmup)
    k = 0
    t_start = time.perf_counter()
    for rep in range(args.repeats):
        order = variants[rep % len(variants):] + variants[:rep % len(variants)]
        for v in order:
            pair = ("unmonitored", v) if k % 2 == 0 else (v, "unmonitored")
            k += 1
            got: dict[str, dict[str, Any]] = {}
            for name in pair:
                tag = f"r{rep}-p{k}-{name}"
                r = spawn({**base, "variant": name, "tag": tag}, out_dir, timeout=timeout)
                got[name] = r
                runs.append(r)
                extra = ""
                if "disk_bytes" in r:
                    extra = f" disk {_fmt_bytes(r['disk_bytes'])}"
                elif "held_bytes" in r:
                    extra = f" held {_fmt_bytes(r['held_bytes'])}"
                print(f"[rep {rep} pair {k}] {name:<12} {r['ms_per_step']:8.1f} ms/step "
                      f"(step p50 {r['step_ms_median']:6.1f}, close {r['teardown_ms']:6.1f} ms) "
                      f"peak RSS +{r['peak_rss_growth_mb']:.0f} MiB{extra}", flush=True)
            ratio = got[v]["ms_per_step"] / got["unmonitored"]["ms_per_step"]
            pairs.append({"repeat": rep, "pair": k, "variant": v, "order": list(pair),
                          "ratio": ratio,
                          "ratio_step_p50": got[v]["step_ms_median"]
                          / got["unmonitored"]["step_ms_median"]})
    summary = summarize(runs, pairs, values_per_step)
    problems = checks(runs, args.steps * n_layers)
    print_table(summary, args, values_per_step)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    noise = noise_warnings(runs)
    if noise:
        print("\nnoise warnings:")
        for w in noise:
            print("  -", w)
    if problems:
        print("\nCONSISTENCY PROBLEMS:")
        for p in problems:
            print("  -", p)
    else:
        print("checks: identical losses and final parameters in all runs; record and spike "
              "counts agree between the recording variants")
    result = {"kind": "bench_workload", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "args": vars(args), "environment": environment(),
              "values_per_step": values_per_step, "summary": summary, "pairs": pairs,
              "problems": problems, "noise_warnings": noise,
              "runs": [{k2: v2 for k2, v2 in r.items() if k2 != "losses"}
                       | {"final_loss": r["losses"][-1]} for r in runs]}
    out = out_dir / f"bench_workload-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"results written to {out}")
    if not args.keep_stores:
        shutil.rmtree(out_dir / "stores", ignore_errors=True)
    return 1 if problems else 0


def long_parent(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"tag": "long", "long": args.long, "long_warmup": args.long_warmup, "seed": args.seed,
           "threads": args.threads,
           "out_dir": str(out_dir), "backend": args.backend,
           "spikestore_impl": args.spikestore_impl, "keep_stores": args.keep_stores}
    r = spawn(cfg, out_dir, stream_stdout=True)
    print()
    print(f"[long] {r['steps']} steps, {r['ms_per_step']:.1f} ms/step overall (incl. close "
          f"{r['close_s']:.2f} s), {r['records']}/{r['expected_records']} records, "
          f"{_fmt_bytes(r['disk_bytes'])} on disk")
    print(f"[long] RSS: start {r['rss_start_mb']:.0f} MiB, before close "
          f"{r['rss_before_close_mb']:.0f} MiB, after close {r['rss_end_mb']:.0f} MiB")
    if "growth_after_warmup_mb" in r:
        print(f"[long] after the {r['warmup_steps']}-step warm-up (RSS "
              f"{r['rss_after_warmup_mb']:.0f} MiB): growth {r['growth_after_warmup_mb']:+.1f} "
              f"MiB at the end, max {r['max_growth_after_warmup_mb']:+.1f} MiB, slope "
              f"{r.get('slope_mb_per_1000_steps', 0.0):+.2f} MiB per 1000 steps")
    result = {"kind": "bench_workload_long", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "args": vars(args), "environment": environment(), "result": r}
    out = out_dir / f"bench_workload-long-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"results written to {out}")
    if not args.keep_stores:
        shutil.rmtree(out_dir / "stores", ignore_errors=True)
    ok = r["records"] == r["expected_records"]
    if not ok:
        print("PROBLEM: the store does not hold every record")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20,
                   help="timed training steps per run (default 20; the in-memory monitor "
                        "holds ~20 MB per step)")
    p.add_argument("--repeats", type=int, default=3,
                   help="pairs per monitored variant (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per run")
    p.add_argument("--out-dir", default="runs/bench", help="where JSON results (and "
                   "temporary stores) go (default runs/bench)")
    p.add_argument("--long", type=int, default=0, metavar="N",
                   help="instead: run spikestore alone for N steps, RSS every 100 steps")
    p.add_argument("--long-warmup", type=int, default=200,
                   help="steps before the RSS reference of --long (default 200)")
    p.add_argument("--backend", choices=("zarr", "hdf5"), default="zarr")
    p.add_argument("--variants", nargs="+", choices=MONITORED, default=list(MONITORED),
                   help="monitored variants to pair with the unmonitored baseline")
    p.add_argument("--spikestore-impl", choices=("auto", "monitor", "hook"), default="auto",
                   help="auto: spikestore.monitor.OutputMonitor when importable, else plain "
                        "hooks calling Store.append")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads in every worker (default 0: leave torch's "
                        "default, the same for all variants). On a shared box, 1 makes runs "
                        "far less sensitive to other processes (no OpenMP barrier stalls)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-stores", action="store_true", help="keep the stores written")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.long < 0:
        p.error("--steps and --repeats must be >= 1, --warmup and --long >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        cfg = json.loads(args._worker)
        res = long_main(cfg) if cfg.get("long") else worker_main(cfg)
        Path(cfg["result_file"]).write_text(json.dumps(res, default=str))
        return 0
    sys.path.insert(0, str(REPO))
    check_backend(args)
    if args.long:
        return long_parent(args)
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
