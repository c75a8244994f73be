#!/usr/bin/env python
"""The one GPU proof of the CUDA path: CUDA tests, the sync count, the GPU benchmark, one table.

``bash tools/gpu_check.sh`` sets up ``.venv`` with a CUDA build of torch and
runs this. It runs, each as a subprocess with a time limit:

1. ``pytest tests/test_cuda.py tests/test_cuda_path.py`` (the CUDA tests
   skip without CUDA; the CPU tests of the path always run);
2. ``tools/bench_gpu.py`` (the reference workload on CUDA, batch 128:
   ratios, GPU memory, synchronisations, the long run);

then prints one table of figures and writes it, with the raw JSON, to
``$OUT/gpu_check.txt`` / ``$OUT/gpu_check.json`` when ``OUT`` is set (the
GPU machine's runner collects ``$OUT``), else to ``build/gpu_check/``.

Without CUDA, or with ``--dry-run``, the benchmark runs on the CPU with tiny
sizes and the CUDA figures read ``n/a``: that proves the script runs end to
end, not the CUDA path. Exit status 0 only when the tests passed and, on a
GPU, the sync targets were met (the timing targets are reported, not enforced).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], limit: float) -> tuple[int, str, str]:
    """Run ``cmd`` in the checkout; ``(exit status, stdout, stderr)``, 124 past ``limit`` seconds."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as exc:
        text = [b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (exc.stdout, exc.stderr)]
        return 124, text[0], text[1] + f"\n(stopped after {limit} s)"
    return p.returncode, p.stdout, p.stderr


def pytest_summary(out: str) -> str:
    lines = [ln for ln in out.strip().splitlines() if re.search(r"\b(passed|failed|skipped|error)", ln)]
    return lines[-1].strip("= ") if lines else "no summary (see the log)"


def fmt(v: Any, spec: str = ".3f", unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:{spec}}{unit}"


def table(info: dict[str, Any]) -> str:
    b = info.get("bench") or {}
    c, s, lg = b.get("compare", {}), b.get("syncs", {}), b.get("long", {})
    tr = b.get("trace_syncs", {})
    ratio, ms, mem = c.get("ratio", {}), c.get("ms_per_step", {}), c.get("per_run", {})
    rng = c.get("ratio_min_max", {})
    pool = lg.get("pool", {})
    rows = [
        ("machine", f"{b.get('gpu') or 'no GPU'}; torch {b.get('torch', '?')}; device {b.get('device', '?')}"
                    + ("  [DRY RUN: CPU, tiny sizes; not a CUDA measurement]" if info["dry"] else "")),
        ("tests (test_cuda.py, test_cuda_path.py)", info["pytest"]),
        ("workload", (f"reference CNN, T=8, batch {b.get('batch')}, {b.get('steps')} steps x {b.get('repeats')} "
                     f"repeats, alternated; {b.get('values_per_step')} spikes/step")),
        ("unmonitored", f"{fmt(ms.get('unmonitored'), '.2f', ' ms/step')}"),
        ("spikestore / unmonitored (target <= 1.02)",
         (f"{fmt(ratio.get('spikestore'))}  (min {fmt((rng.get('spikestore') or [None])[0])}, "
         f"max {fmt((rng.get('spikestore') or [None, None])[1])})")),
        ("steady-state step ratio, spikestore / in-memory", (f"{fmt(c.get('p50_step_ratio', {}).get('spikestore'))} / "
                                                             f"{fmt(c.get('p50_step_ratio', {}).get('memory'))}")),
        ("SpikingJelly in-memory / unmonitored", f"{fmt(ratio.get('memory'))}"),
        ("GPU memory growth per step: unmonitored",
         fmt((mem.get("unmonitored") or {}).get("growth_mb_per_step"), ".2f", " MB")),
        ("GPU memory growth per step: SpikingJelly in-memory",
         fmt((mem.get("memory") or {}).get("growth_mb_per_step"), ".2f", " MB")),
        ("GPU memory growth per step: spikestore",
         fmt((mem.get("spikestore") or {}).get("growth_mb_per_step"), ".2f", " MB")),
        ("GPU peak over start: unmonitored / spikestore",
         (f"{fmt((mem.get('unmonitored') or {}).get('peak_over_start_mb'), '.0f', ' MB')} / "
         f"{fmt((mem.get('spikestore') or {}).get('peak_over_start_mb'), '.0f', ' MB')}")),
        ("syncs per step, bare loop", fmt(s.get("unmonitored_per_step"), ".2f")),
        ("syncs per step, all 5 monitor kinds streaming (target 0)", fmt(s.get("spikestore_per_step"), ".2f")),
        ("sync_debug_mode('error') steps completed", fmt(s.get("error_mode_steps"), "d")),
        ("GPU-trace syncs per step: bare / all kinds (target 0)",
         (f"{fmt(tr.get('unmonitored_per_step'), '.2f')} / {fmt(tr.get('spikestore_per_step'), '.2f')}; "
         f"writer event waits {fmt(tr.get('writer_event_waits'), 'd')}")),
        ("long run", f"{lg.get('steps')} steps, {fmt(lg.get('seconds'), '.1f', ' s')}, {lg.get('records')} records"),
        ("host RSS first / last; slope", (f"{fmt((lg.get('rss_mb') or [None])[0], '.0f')} / "
                                          f"{fmt((lg.get('rss_mb') or [None, None])[1], '.0f')} MB; "
                                          f"{fmt(lg.get('rss_slope_kb_per_1000_steps'), '.0f', ' KB/1000 steps')}")),
        ("pinned pool first / max / last; slope", (
            f"{'/'.join(fmt(v, '.1f') for v in lg.get('pinned_mb', []))} MB; "
            f"{fmt(lg.get('pinned_slope_kb_per_1000_steps'), '.0f', ' KB/1000 steps')}"
            f" (bound {fmt(lg.get('queue_budget_mb'), '.0f', ' MB')})")),
        ("pinned allocations / reuses", f"{pool.get('allocations')} / {pool.get('reuses')}"),
        ("GPU allocated slope (long run)", fmt(lg.get("gpu_slope_kb_per_1000_steps"), ".0f", " KB/1000 steps")),
        ("wall time: setup excluded / whole check", (f"{fmt(b.get('seconds'), '.0f', ' s')} bench / "
                                                   f"{fmt(info['seconds'], '.0f', ' s')} check")),
    ]
    if info.get("bench_error"):
        rows.append(("benchmark error", info["bench_error"]))
    w = max(len(k) for k, _ in rows)
    line = "-" * (w + 60)
    return "\n".join(["spikestore GPU check", line] + [f"{k:<{w}}  {v}" for k, v in rows] + [line])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script itself")
    args = p.parse_args(argv)
    import torch

    has_cuda = torch.cuda.is_available()
    dry = args.dry_run or not has_cuda
    if not has_cuda and not args.dry_run:
        print("[gpu_check] torch.cuda.is_available() is False: running the dry run (CPU, tiny sizes); "
              "this is not the CUDA proof", file=sys.stderr)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"dry": dry}
    print("[gpu_check] CUDA tests and the CPU tests of the path", file=sys.stderr)
    rc_t, out, err = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                          "tests/test_cuda.py", "tests/test_cuda_path.py"], 240)
    info["pytest"] = pytest_summary(out) + ("" if rc_t == 0 else f" (exit {rc_t})")
    info["pytest_log"] = (out + err)[-20000:]
    print("[gpu_check] benchmark (tools/bench_gpu.py)", file=sys.stderr)
    bench = [sys.executable, "tools/bench_gpu.py"] + (["--dry-run", "--device", "cpu"] if dry else [])
    rc_b, out, err = run(bench, 300)
    try:
        info["bench"] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        info["bench"], info["bench_error"] = None, f"exit {rc_b}: {(out + err).strip()[-400:]}"
    info["bench_log"] = err[-20000:]
    info["seconds"] = time.perf_counter() - t0
    text = table(info)
    print(text)
    dest = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "build" / "gpu_check"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "gpu_check.txt").write_text(text + "\n", encoding="utf-8")
    (dest / "gpu_check.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    print(f"[gpu_check] table and JSON written to {dest}", file=sys.stderr)
    syncs = ((info.get("bench") or {}).get("syncs") or {})
    traced = (info.get("bench") or {}).get("trace_syncs") or {}
    sync_ok = dry or (syncs.get("spikestore_per_step") == 0 and isinstance(syncs.get("error_mode_steps"), int)
                      and traced.get("spikestore_per_step") in (0, None))
    return 0 if rc_t == 0 and rc_b == 0 and info["bench"] is not None and sync_ok else 1


if __name__ == "__main__":
    sys.exit(main())
