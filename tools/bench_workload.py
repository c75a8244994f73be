#!/usr/bin/env python
"""Benchmark recording the reference workload (docs/performance.md, "Reference workload").

This file is the command line and the orchestration: it starts one worker
process per run (``tools/workload_worker.py``, which builds the net of
``tools/workload.py``, times it and measures memory), alternates the runs in
pairs, and writes the JSON; ``tools/workload_report.py`` computes the ratios
and prints the tables.

Variants, each recording the output of every LIF layer at every step:

``unmonitored``
    The bare training loop (the baseline of every pair).
``memory``
    SpikingJelly's in-memory ``monitor.OutputMonitor(net, neuron.LIFNode)``.
``zlib``
    The tutorial's hook: ``OutputMonitor`` with a ``function_on_output`` that
    bit-packs and ``zlib.compress``-es every output, keeping the bytes in RAM.
``spikestore``
    ``spikestore.monitor.OutputMonitor(net, neuron.LIFNode, store=store)``;
    its wall time includes ``store.close()``, i.e. everything is on disk.
``spikestore@baseline``
    With ``--baseline-src DIR``: the same, with the spikestore of the checkout
    ``DIR`` (first on the worker's ``PYTHONPATH``; the worker checks that it
    imported it), to compare two versions of the code in one alternated run.

How it is measured
------------------
* Every variant-repeat runs in its **own subprocess**, so peak RSS is a clean
  per-run number and every run starts alike. Peak RSS growth = VmHWM after the
  timed phase (reset just before it) minus VmRSS at its start.
* Each worker builds the net with the same seed, uses the same batches, warms
  up with ``--warmup`` steps of the *same* variant, then times monitor/store
  creation, ``--steps`` training steps and ``remove_hooks()`` /
  ``store.close()``. Thread counts are torch's default unless ``--threads``.
* Pairs alternate: each repeat runs (unmonitored, V) for every monitored
  variant V, the order inside a pair flipping from pair to pair and the order
  of the variants rotating from repeat to repeat. The ratio of V is the median
  over its pairs of ``ms_V / ms_unmonitored`` of the same pair, so a slow patch
  of the (shared, noisy) machine hits both halves of a ratio. With
  ``--baseline-src``, ``spikestore / spikestore@baseline`` is also reported:
  the median over repeats of the ratio of the two runs' ms/step; before the
  pairs, one untimed run of each spikestore variant fills numba's cache of its
  code (a fresh worktree has none, and compiling takes ~15 s).
* After the timed phase (not timed) the recording variants are checked: the
  numbers of records and of ones read back must agree, and the losses of all
  runs must be identical (the hooks must not change training).

``--long N`` instead runs spikestore alone for N steps, printing RSS every
100 steps, and reports RSS growth after ``--long-warmup`` steps (plus a
least-squares slope), to show memory stays flat on a long run.

Examples
--------
::

    python tools/bench_workload.py --steps 20 --repeats 3 --out-dir runs/bench
    python tools/bench_workload.py --long 2000 --out-dir runs/bench
    git worktree add /tmp/before <commit>      # the code to compare against
    python tools/bench_workload.py --variants spikestore --baseline-src /tmp/before
    git worktree remove --force /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import workload_report as report  # a sibling in tools/: the script's folder is on sys.path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "workload_worker.py"
MONITORED = ("memory", "zlib", "spikestore")
BASELINE = "spikestore@baseline"


def spawn(cfg: dict[str, Any], out_dir: Path, stream_stdout: bool = False,
          timeout: float | None = None) -> dict[str, Any]:
    """Run one worker process on ``cfg`` and return its result dict.

    The worker's ``PYTHONPATH`` starts with ``cfg["spikestore_src"]`` when
    given, else with this checkout, then ``tools/``.
    """
    name = cfg.get("variant", "long")
    res_file = out_dir / "stores" / f"result-{name}-{cfg['tag']}.json"
    res_file.parent.mkdir(parents=True, exist_ok=True)
    cfg = {**cfg, "result_file": str(res_file)}
    src = cfg.get("spikestore_src") or str(REPO)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, str(WORKER), json.dumps(cfg)], env=env,
                          cwd=str(REPO), timeout=timeout, text=True,
                          stdout=None if stream_stdout else subprocess.PIPE,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0 or not res_file.exists():
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-25:])
        raise RuntimeError(f"worker {name} {cfg['tag']} failed (exit {proc.returncode}):\n{tail}")
    res = json.loads(res_file.read_text())
    res_file.unlink()
    # Surface warnings from the worker (e.g. dropped records), minus torch's Triton notice.
    warn = [ln for ln in (proc.stderr or "").splitlines()
            if "arning" in ln and "Triton not available" not in ln]
    if warn:
        res["stderr_warnings"] = warn
        for ln in warn:
            print(f"  worker {name} {cfg['tag']}: {ln}", flush=True)
    return res


def git_commit(checkout: Path) -> str | None:
    """HEAD of ``checkout``, with ``+dirty`` when its ``spikestore/`` has changes."""
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "spikestore"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return None


def environment(baseline_src: Path | None) -> dict[str, Any]:
    """Versions of Python and the libraries, the machine, and the code's commits."""
    import importlib.metadata as md

    def ver(p: str) -> str | None:
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "torch": ver("torch"), "spikingjelly": ver("spikingjelly"), "zarr": ver("zarr"),
           "numpy": ver("numpy"), "h5py": ver("h5py"), "spikestore": ver("spikestore"),
           "spikestore_git": git_commit(REPO)}
    if baseline_src is not None:
        env |= {"baseline_src": str(baseline_src), "baseline_git": git_commit(baseline_src)}
    return env


def bench_main(args: argparse.Namespace) -> int:
    """The alternated pairs, the report and the JSON file; 1 on consistency problems."""
    import workload

    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    values_per_step = workload.VALUES_PER_STEP
    n_layers = len(workload.LIF_SHAPES)
    base = {"steps": args.steps, "warmup": args.warmup, "seed": args.seed, "threads": args.threads,
            "out_dir": str(out_dir), "backend": args.backend, "keep_stores": args.keep_stores}
    variants = [v for v in MONITORED if v in args.variants]
    if args.baseline_src is not None:
        variants.append(BASELINE)
    src = {BASELINE: str(args.baseline_src)}
    runs: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    timeout = 120 + 20 * (args.steps + args.warmup)
    k = 0
    width = max(12, *(len(v) for v in variants))
    t_start = time.perf_counter()
    if args.baseline_src is not None:  # a fresh worktree has no numba cache: compile it now
        for v in (v for v in variants if v.startswith("spikestore")):
            print(f"[prime] {v}: one untimed run, so that numba's cache of its code is filled",
                  flush=True)
            spawn({**base, "steps": 1, "warmup": 0, "variant": v, "tag": "prime",
                   "spikestore_src": src.get(v)}, out_dir, timeout=timeout + 300)
    for rep in range(args.repeats):
        order = variants[rep % len(variants):] + variants[:rep % len(variants)]
        for v in order:
            pair = ("unmonitored", v) if k % 2 == 0 else (v, "unmonitored")
            k += 1
            got: dict[str, dict[str, Any]] = {}
            for name in pair:
                cfg = {**base, "variant": name, "tag": f"r{rep}-p{k}-{name}",
                       "spikestore_src": src.get(name)}
                r = spawn(cfg, out_dir, timeout=timeout)
                got[name] = r
                runs.append(r)
                extra = ""
                if "disk_bytes" in r:
                    extra = f" disk {report.fmt_bytes(r['disk_bytes'])}"
                elif "held_bytes" in r:
                    extra = f" held {report.fmt_bytes(r['held_bytes'])}"
                print(f"[rep {rep} pair {k}] {name:<{width}} {r['ms_per_step']:8.1f} ms/step "
                      f"(step p50 {r['step_ms_median']:6.1f}, close {r['teardown_ms']:6.1f} ms) "
                      f"peak RSS +{r['peak_rss_growth_mb']:.0f} MiB{extra}", flush=True)
            mv, mu = got[v]["ms_per_step"], got["unmonitored"]["ms_per_step"]
            pairs.append({"repeat": rep, "pair": k, "variant": v, "order": list(pair),
                          "ratio": mv / mu,
                          "ratio_step_p50": got[v]["step_ms_median"]
                          / got["unmonitored"]["step_ms_median"],
                          "ms_per_step": mv, "ms_per_step_unmonitored": mu})
    summary = report.summarize(runs, pairs, values_per_step, ["unmonitored", *variants])
    comparison = (report.compare_versions(pairs, "spikestore", BASELINE)
                  if args.baseline_src is not None else None)
    env = environment(args.baseline_src)
    problems = report.checks(runs, args.steps * n_layers)
    report.print_table(summary, steps=args.steps, warmup=args.warmup, repeats=args.repeats,
                       backend=args.backend, values_per_step=values_per_step)
    if comparison is not None:
        report.print_comparison(comparison, env.get("baseline_git"))
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    noise = report.noise_warnings(runs)
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
              "args": vars(args), "environment": env,
              "values_per_step": values_per_step, "summary": summary, "pairs": pairs,
              "comparison": comparison, "problems": problems, "noise_warnings": noise,
              "runs": [{k2: v2 for k2, v2 in r.items() if k2 != "losses"}
                       | {"final_loss": r["losses"][-1]} for r in runs]}
    out = out_dir / f"bench_workload-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"results written to {out}")
    if not args.keep_stores:
        shutil.rmtree(out_dir / "stores", ignore_errors=True)
    return 1 if problems else 0


def long_parent(args: argparse.Namespace) -> int:
    """``--long``: one worker streaming its RSS samples; 1 if records are missing."""
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"tag": "long", "long": args.long, "long_warmup": args.long_warmup, "seed": args.seed,
           "threads": args.threads, "out_dir": str(out_dir), "backend": args.backend,
           "keep_stores": args.keep_stores}
    r = spawn(cfg, out_dir, stream_stdout=True)
    report.print_long(r)
    result = {"kind": "bench_workload_long", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "args": vars(args), "environment": environment(None), "result": r}
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
    """The command line; see the module docstring."""
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
    p.add_argument("--baseline-src", type=Path, metavar="DIR",
                   help=f"also run {BASELINE!r}: spikestore imported from the checkout DIR "
                        "(e.g. `git worktree add /tmp/before <commit>`), paired with unmonitored "
                        "like the others, and report spikestore / spikestore@baseline")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads in every worker (default 0: leave torch's "
                        "default, the same for all variants). On a shared box, 1 makes runs "
                        "far less sensitive to other processes (no OpenMP barrier stalls)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-stores", action="store_true", help="keep the stores written")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.long < 0:
        p.error("--steps and --repeats must be >= 1, --warmup and --long >= 0")
    if args.baseline_src is not None:
        if args.long:
            p.error("--baseline-src compares paired runs; it does not apply to --long")
        args.baseline_src = args.baseline_src.resolve()
        if not (args.baseline_src / "spikestore" / "__init__.py").is_file():
            p.error(f"--baseline-src {args.baseline_src}: no spikestore/__init__.py there")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``--long`` or the alternated pairs."""
    args = parse_args(argv)
    if args.long:
        return long_parent(args)
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
