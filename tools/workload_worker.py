#!/usr/bin/env python
"""What one subprocess of ``tools/bench_workload.py`` runs: one variant, measured.

``tools/bench_workload.py`` starts this file once per run, as
``python tools/workload_worker.py CONFIG_JSON``, so that every run has a
fresh process: peak RSS is then a clean per-run number (a process's
high-water mark cannot be lowered again, and the in-memory monitor leaves a
fragmented heap behind), and each run starts from the same state. The
result is a JSON dict written to ``CONFIG["result_file"]``.

A run builds the reference net of ``tools/workload.py`` with a fixed seed,
warms up on the same variant (imports, allocator, a throw-away store), then
times monitor/store creation, the training steps and ``remove_hooks()`` /
``store.close()``, measures peak RSS growth, and afterwards (untimed) counts
the records and ones the variant holds. ``--long`` runs spikestore alone for
many steps and samples RSS (:func:`long_main`).

The variants (``CONFIG["variant"]``; the kind is the part before any ``@``):

``unmonitored``
    The bare training loop.
``memory``
    SpikingJelly's in-memory ``monitor.OutputMonitor(net, neuron.LIFNode)``.
``zlib``
    The tutorial's hook: ``OutputMonitor`` with a ``function_on_output`` that
    bit-packs and ``zlib.compress``-es every output, keeping the bytes in RAM.
``spikestore``, ``spikestore@<label>``
    ``spikestore.monitor.OutputMonitor(net, neuron.LIFNode, store=store)``.
    With ``CONFIG["spikestore_src"]`` the parent put that checkout first on
    ``PYTHONPATH``, and this worker fails unless ``spikestore`` was imported
    from it. Only the public API (``spikestore.Store``, ``spikestore.open``,
    ``spikestore.monitor.OutputMonitor``) is used, so older commits run too.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from measure import MB, PeakRSS, disk_bytes, remove_path, rss_bytes


# ----------------------------------------------------------------------------------------
# the recording variants
# ----------------------------------------------------------------------------------------
def store_path(out_dir: Path, tag: str, backend: str) -> Path:
    """Where the store of run ``tag`` goes (under ``out_dir/stores``)."""
    return out_dir / "stores" / (tag + (".h5" if backend == "hdf5" else ".zarr"))


def zlib_compress(spike: Any) -> tuple[bytes, Any, tuple[int, ...], int]:
    """The tutorial's hook: float -> bits (little order) -> zlib, kept in RAM."""
    import numpy as np

    a = spike.detach().cpu().numpy()
    bits = np.packbits(a.reshape(-1).astype(np.bool_), bitorder="little")
    padding = (-a.size) % 8
    return zlib.compress(bits.tobytes()), spike.dtype, tuple(spike.shape), padding


def zlib_decompress_ones(item: tuple[bytes, Any, tuple[int, ...], int]) -> int:
    """Number of ones in one record of :func:`zlib_compress` (padding bits are zero)."""
    import numpy as np

    raw = np.frombuffer(zlib.decompress(item[0]), dtype=np.uint8)
    return int(np.bitwise_count(raw).sum())


def load_spikestore(src: str | None) -> str:
    """Import spikestore; with ``src``, fail unless it came from that checkout.

    Returns the path of the imported package's ``__init__.py``.
    """
    import spikestore

    file = str(Path(spikestore.__file__).resolve())
    if src is not None and not file.startswith(str(Path(src).resolve()) + os.sep):
        raise RuntimeError(f"spikestore was imported from {file}, not from {src}: "
                           "is PYTHONPATH overridden?")
    return file


def run_variant(kind: str, net: Any, opt: Any, batches: list[Any], *, start: int,
                path: Path | None, backend: str,
                marks: list[float] | None = None, sync: bool = True) -> tuple[list[float], Any]:
    """Create the monitor (and store), train over ``batches``, remove hooks / close.

    Everything here is what the timed phase measures.

    Parameters
    ----------
    kind
        ``"unmonitored"``, ``"memory"``, ``"zlib"`` or ``"spikestore"``.
    net, opt, batches, start
        As for ``workload.train_steps``.
    path, backend
        The spikestore store to write (``kind == "spikestore"`` only).
    marks
        If given, gets ``time.perf_counter()`` at the start of every step and
        once after the last one, for per-step times (a noise diagnostic).
    sync
        Passed to ``workload.train_steps`` (``False`` on CUDA: no per-step
        synchronisation for the loss).

    Returns
    -------
    losses, monitor
        The loss of every step, and the monitor whose records the caller
        inspects afterwards (``None`` for ``unmonitored``).
    """
    import workload
    from spikingjelly.activation_based import monitor as sj_monitor
    from spikingjelly.activation_based import neuron

    def tick(_step: int) -> None:
        if marks is not None:
            marks.append(time.perf_counter())

    if kind == "unmonitored":
        losses = workload.train_steps(net, opt, batches, on_step=tick, start=start, sync=sync)
        tick(-1)
        return losses, None
    if kind in ("memory", "zlib"):
        fn = {"function_on_output": zlib_compress} if kind == "zlib" else {}
        m = sj_monitor.OutputMonitor(net, neuron.LIFNode, **fn)
        losses = workload.train_steps(net, opt, batches, on_step=tick, start=start, sync=sync)
        tick(-1)
        m.remove_hooks()
        return losses, m
    if kind == "spikestore":
        import spikestore
        from spikestore import monitor as ss_monitor

        assert path is not None
        store = spikestore.Store(path, mode="w", overwrite=True, backend=backend)
        m = ss_monitor.OutputMonitor(net, neuron.LIFNode, store=store)

        def on_step(step: int) -> None:
            tick(step)
            store.set_step(step)

        losses = workload.train_steps(net, opt, batches, on_step=on_step, start=start, sync=sync)
        tick(-1)
        m.remove_hooks()
        store.close()
        return losses, m
    raise ValueError(kind)


def inspect_records(kind: str, m: Any, path: Path | None, backend: str,
                    steps: range) -> dict[str, Any]:
    """Untimed: how much the variant holds, and how many records / ones it recorded."""
    out: dict[str, Any] = {}
    if kind == "memory":
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
    elif kind == "zlib":
        out.update(records=len(m.records),
                   ones=sum(zlib_decompress_ones(r) for r in m.records),
                   held_bytes=sum(len(r[0]) for r in m.records))
    elif kind == "spikestore":
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


# ----------------------------------------------------------------------------------------
# one paired run, and the long run
# ----------------------------------------------------------------------------------------
def worker_main(cfg: dict[str, Any]) -> dict[str, Any]:
    """One variant-repeat: warm up, time, measure, inspect. Returns the result dict."""
    import torch
    import workload

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    variant = cfg["variant"]
    kind = variant.split("@")[0]
    out_dir = Path(cfg["out_dir"])
    backend = cfg["backend"]
    ss_file = load_spikestore(cfg.get("spikestore_src")) if kind == "spikestore" else None

    warmup, steps = cfg["warmup"], cfg["steps"]
    batches = workload.make_batches(warmup + steps, seed=cfg["seed"])
    net, opt = workload.build_net(seed=cfg["seed"])

    wpath = store_path(out_dir, f"warmup-{variant}-{cfg['tag']}", backend)
    if warmup:
        _, m = run_variant(kind, net, opt, batches[:warmup], start=0, path=wpath,
                           backend=backend)
        del m
    remove_path(wpath)
    gc.collect()

    path = (store_path(out_dir, f"{variant}-{cfg['tag']}", backend) if kind == "spikestore"
            else None)
    torch.manual_seed(cfg["seed"] + 1)
    peak = PeakRSS()
    rss0 = rss_bytes()
    peak.start()
    marks: list[float] = []
    t0 = time.perf_counter()
    losses, m = run_variant(kind, net, opt, batches[warmup:], start=warmup, path=path,
                            backend=backend, marks=marks)
    wall = time.perf_counter() - t0
    peak_rss = peak.stop()
    rss1 = rss_bytes()
    with torch.no_grad():  # the hooks must not change training: compared across runs
        param_sum = float(sum(p.double().abs().sum() for p in net.parameters()))

    step_ms = [(b - a) * 1e3 for a, b in itertools.pairwise(marks)]
    res: dict[str, Any] = {
        "variant": variant, "tag": cfg["tag"], "steps": steps, "warmup": warmup,
        "wall_s": wall, "ms_per_step": wall / steps * 1e3,
        # per-step times: noise diagnostic only (they leave out monitor/store creation and
        # close; the headline number is ms_per_step, the whole wall time / steps)
        "step_ms": [round(x, 2) for x in step_ms],
        "step_ms_median": statistics.median(step_ms),
        "setup_ms": (marks[0] - t0) * 1e3, "teardown_ms": (t0 + wall - marks[-1]) * 1e3,
        "rss_start_mb": rss0 / MB, "rss_end_mb": rss1 / MB, "peak_rss_mb": peak_rss / MB,
        "peak_rss_growth_mb": (peak_rss - rss0) / MB, "rss_method": peak.method,
        "losses": losses, "param_abs_sum": param_sum, "torch_threads": torch.get_num_threads(),
        "spikestore_file": ss_file, "spikestore_src": cfg.get("spikestore_src"),
    }
    res.update(inspect_records(kind, m, path, backend, range(warmup, warmup + steps)))
    if path is not None and not cfg["keep_stores"]:
        remove_path(path)
    return res


def long_main(cfg: dict[str, Any]) -> dict[str, Any]:
    """spikestore alone for ``cfg["long"]`` steps, RSS printed every 100 steps.

    Returns the samples, RSS at the start, before and after close, and RSS
    growth after ``cfg["long_warmup"]`` steps with a least-squares slope.
    """
    from itertools import cycle, islice

    import torch
    import workload
    from spikingjelly.activation_based import neuron

    import spikestore
    from spikestore import monitor as ss_monitor

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    n, every, warm = cfg["long"], 100, cfg["long_warmup"]
    backend = cfg["backend"]
    ss_file = load_spikestore(cfg.get("spikestore_src"))
    pool = workload.make_batches(min(n, 64), seed=cfg["seed"])  # cycled: bounded input memory
    net, opt = workload.build_net(seed=cfg["seed"])
    torch.manual_seed(cfg["seed"] + 1)
    path = store_path(Path(cfg["out_dir"]), "long", backend)
    gc.collect()
    rss_start = rss_bytes()
    store = spikestore.Store(path, mode="w", overwrite=True, backend=backend)
    m = ss_monitor.OutputMonitor(net, neuron.LIFNode, store=store)

    samples: list[dict[str, float]] = []
    t0 = time.perf_counter()
    print(f"[long] spikestore ({backend}) for {n} steps; RSS at start "
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
        "mode": "long", "steps": n, "warmup_steps": warm, "spikestore_file": ss_file,
        "backend": backend, "samples": samples,
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
                sum((x - mx) * (y - my) for x, y in zip(xs, r, strict=True)) / sxx * 1000 if sxx else 0.0)
    if not cfg["keep_stores"]:
        remove_path(path)
    return res


def main(argv: list[str] | None = None) -> int:
    """Run the configuration given as JSON in ``argv[0]``; write the result file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: workload_worker.py CONFIG_JSON (started by tools/bench_workload.py)",
              file=sys.stderr)
        return 2
    cfg = json.loads(args[0])
    res = long_main(cfg) if cfg.get("long") else worker_main(cfg)
    Path(cfg["result_file"]).write_text(json.dumps(res, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
