"""Benchmark of the read path: open + len, random single-record reads, full-scan firing rate.

Writes a store of ``--records`` (default 100,000) small spike records, shape
``(8, 32)`` (batch 8, 32 neurons, single-step layout) at firing rate
``--rate``, with ``Store.append``, then measures:

* **open + len**: ``spikestore.open(path)`` and ``len(run[key])`` on a fresh
  ``Run`` each time (modules already imported), median over ``--repeats``;
  also once in a fresh interpreter, imports included, for reference.
  Target: <= 50 ms.
* **random single-record read** (warm): ``s[i]`` for random ``i`` on one
  open run, median; this run keeps the last 8 decoded chunks, so most reads
  hit that cache. Target: <= 2 ms.
* **cold random read**: a fresh run per read, so the record's chunk is read
  from the page cache and decoded each time (only the read is timed, not
  the open). Target: <= 2 ms.
* **full-scan firing rate**: ``analysis.firing_rate(s, per=...)`` over every
  record, pinned to one CPU core (``sched_setaffinity``), in spike values
  (0/1 entries: records x batch x neurons) per second per core; and reading
  + decoding every chunk alone. No target.

With ``--baseline-src DIR`` (a checkout of another commit, e.g. a
``git worktree``), the store is written once by this checkout, and each
round runs the measures in two fresh processes, one importing spikestore
from this checkout and one from ``DIR``, in alternating order (A B, then
B A); it reports each variant's median over all rounds and the median of
the per-round ratios (this / baseline). This machine is shared and noisy:
only ratios measured side by side mean anything.

Example::

    python tools/bench_read.py                   # Zarr, 100,000 records
    python tools/bench_read.py --backend hdf5 --records 200000
    git worktree add /tmp/before HEAD~1
    python tools/bench_read.py --backend both --baseline-src /tmp/before --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

KEY = "output/bench"
SELECTION = {"every": 1, "start": None, "stop": None, "batch": None, "neurons": None,
             "step_mode": "s", "batch_axis": 0}
HERE = Path(__file__).resolve().parents[1]
#: (key, label, unit, target in seconds or None); scan figures are in spikes per second.
MEASURES = [
    ("open_len_s", "open + len (fresh Run, median)", "ms", 0.050),
    ("open_len_new_process_s", "open + len (new process, imports included)", "ms", None),
    ("read_warm_median_s", "random s[i], one open run (median)", "ms", 0.002),
    ("read_cold_median_s", "random s[i], fresh run each read (median)", "ms", 0.002),
    ("scan_neuron_spikes_per_s", "firing_rate(per='neuron') full scan, 1 core", "G/s", None),
    ("scan_step_spikes_per_s", "firing_rate(per='step') full scan, 1 core", "G/s", None),
    ("decode_spikes_per_s", "  of which reading + decoding the chunks", "G/s", None),
]


def make_store(path: Path, n: int, rate: float, seed: int) -> float:
    """Write ``n`` records of ``(8, 32)`` spikes at ``rate`` to ``path``; the seconds it took."""
    import spikestore

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    block = 4096
    with spikestore.Store(path, mode="w") as store:
        store.set_stream_info(KEY, selection=SELECTION)
        for lo in range(0, n, block):
            spikes = (rng.random((min(block, n - lo), 8, 32)) < rate).astype(np.float32)
            for k, rec in enumerate(spikes):
                store.set_step(lo + k)
                store.append(KEY, rec)
    return time.perf_counter() - t0


def measure(path: Path, rate: float, reads: int, repeats: int, seed: int) -> dict[str, Any]:
    """Every figure of the module docstring for the store at ``path``, with the spikestore imported here."""
    import spikestore
    from spikestore import analysis

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run = spikestore.open(path)
        n = len(run[KEY])
        times.append(time.perf_counter() - t0)
        run.close()
    code = (f"import time; t = time.perf_counter(); import spikestore; r = spikestore.open({str(path)!r}); "
            f"n = len(r[{KEY!r}]); print(time.perf_counter() - t)")
    cold_process = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        check=True, env=os.environ).stdout)

    rng = np.random.default_rng(seed + 1)
    idx = rng.integers(0, n, reads)
    run = spikestore.open(path)
    s = run[KEY]
    s[0]
    warm = []
    for i in idx:
        t0 = time.perf_counter()
        rec = s[int(i)]
        warm.append(time.perf_counter() - t0)
    assert rec.shape == (8, 32) and rec.dtype == np.float32
    seg = s.segments[0]
    run.close()
    cold = []
    for i in idx[: max(20, reads // 10)]:
        r2 = spikestore.open(path)
        s2 = r2[KEY]
        t0 = time.perf_counter()
        s2[int(i)]
        cold.append(time.perf_counter() - t0)
        r2.close()

    cores = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    if cores:
        os.sched_setaffinity(0, {min(cores)})
    values = n * 8 * 32
    import xarray  # per="step" returns a DataArray: keep xarray's first import out of the timing

    xarray.DataArray(np.zeros(1))
    run = spikestore.open(path)
    t0 = time.perf_counter()
    for c in range(seg.nchunks):
        run[KEY].segments[0].chunk(c)
    decode_s = time.perf_counter() - t0
    run.close()
    scans = {}
    for per in ("neuron", "step"):
        run = spikestore.open(path)
        t0 = time.perf_counter()
        result = analysis.firing_rate(run[KEY], per=per)
        scans[per] = time.perf_counter() - t0
        run.close()
        if per == "neuron":
            assert abs(float(np.mean(result)) - rate) < 0.01
    if cores:
        os.sched_setaffinity(0, cores)
    run = spikestore.open(path)
    disk = run.nbytes()
    run.close()
    return {"records": n, "chunk_records": seg.chunk_records, "bytes_on_disk": disk,
            "open_len_s": statistics.median(times), "open_len_new_process_s": cold_process,
            "read_warm_median_s": statistics.median(warm), "read_cold_median_s": statistics.median(cold),
            "scan_neuron_spikes_per_s": values / scans["neuron"], "scan_step_spikes_per_s": values / scans["step"],
            "decode_spikes_per_s": values / decode_s}


def _show(value: float, unit: str) -> str:
    return f"{value * 1e3:.3f} ms" if unit == "ms" else f"{value / 1e9:.2f} G spikes/s"


def report(backend: str, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Print the table of one backend (one column per variant) and return its summary."""
    names = list(results)
    first = results[names[0]][0]
    print(f"\n{backend}: {first['records']:,} records, {first['chunk_records']} records per chunk, "
          f"{first['bytes_on_disk'] / 2**20:.2f} MiB on disk; 'spikes' = 0/1 values (records x 8 x 32); "
          f"{len(results[names[0]])} round(s)\n")
    width = max(len(m[1]) for m in MEASURES)
    head = "".join(f"  {n:>20}" for n in names)
    ratio_head = f"  {'ratio ' + names[0] + '/' + names[1]:>24}" if len(names) == 2 else ""
    print(f"{'measure':<{width}}{head}  {'target':>6}{ratio_head}")
    summary: dict[str, Any] = {}
    for key, label, unit, target in MEASURES:
        med = {n: statistics.median(r[key] for r in results[n]) for n in names}
        cells = "".join(f"  {_show(med[n], unit):>20}" for n in names)
        line = f"{label:<{width}}{cells}  {('-' if target is None else f'{target * 1e3:g} ms'):>6}"
        summary[key] = {"median": med}
        if len(names) == 2:
            ratios = [a[key] / b[key] for a, b in zip(results[names[0]], results[names[1]], strict=True)]
            summary[key]["ratio_median"] = statistics.median(ratios)
            summary[key]["ratio_range"] = [min(ratios), max(ratios)]
            line += f"  {statistics.median(ratios):>10.3f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        print(line)
    return summary


def _child(src: Path, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter that imports spikestore from ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(path), "--rate", str(args.rate),
           "--reads", str(args.reads), "--repeats", str(args.repeats), "--seed", str(args.seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"measuring with {src} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(result.pop("spikestore_file")).resolve().parents[1] != src.resolve():
        raise SystemExit(f"the child imported spikestore from elsewhere than {src}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=0.1, help="fraction of values that are spikes")
    ap.add_argument("--backend", choices=["zarr", "hdf5", "both"], default="zarr")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--reads", type=int, default=2000, help="warm reads; a tenth of them (at least 20) cold")
    ap.add_argument("--store", type=Path, help="where to write the store (default: a temp dir; one backend)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-src", type=Path, metavar="DIR",
                    help="also measure the spikestore of this checkout, in alternated processes")
    ap.add_argument("--rounds", type=int, default=None, help="alternated rounds (default 1, 4 with a baseline)")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # (a child: measure this store, print JSON)
    args = ap.parse_args(argv)
    if args.measure is not None:
        import spikestore

        result = measure(args.measure, args.rate, args.reads, args.repeats, args.seed)
        print(json.dumps(result | {"spikestore_file": spikestore.__file__}))
        return 0
    if args.baseline_src is not None and not (args.baseline_src / "spikestore" / "__init__.py").is_file():
        ap.error(f"--baseline-src {args.baseline_src}: no spikestore/__init__.py there")
    rounds = args.rounds or (4 if args.baseline_src else 1)
    backends = ["zarr", "hdf5"] if args.backend == "both" else [args.backend]
    variants = {"this": HERE} | ({"baseline": args.baseline_src} if args.baseline_src else {})
    summary: dict[str, Any] = {"rounds": rounds, "baseline_src": str(args.baseline_src or "")}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            suffix = ".zarr" if backend == "zarr" else ".h5"
            path = args.store if args.store and len(backends) == 1 else Path(tmp) / f"bench{suffix}"
            write_s = make_store(path, args.records, args.rate, args.seed)
            print(f"wrote {args.records:,} records of (8, 32) float32 spikes at rate {args.rate} to {path} "
                  f"({backend}) in {write_s:.1f} s")
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
            for r in range(rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in order:
                    if len(variants) == 1:
                        results[name].append(measure(path, args.rate, args.reads, args.repeats, args.seed))
                    else:
                        results[name].append(_child(variants[name], path, args))
            summary[backend] = report(backend, results) | {"rounds": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
