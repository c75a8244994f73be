"""Benchmark of the read path: open + len, random single-record reads, full-scan firing rate.

Writes a store of ``--records`` (default 100,000) small spike records, shape
``(8, 32)`` (batch 8, 32 neurons, single-step layout) at firing rate
``--rate``, with ``Store.append``, then measures:

* **open + len**: ``spikestore.open(path)`` and ``len(run[key])`` on a fresh
  ``Run`` each time (modules already imported), median over ``--repeats``;
  also once in a fresh interpreter, imports included, for reference.
  Target: <= 50 ms.
* **random single-record read**: ``s[i]`` for random ``i`` on one open run,
  median; this run keeps the last 8 decoded chunks, so most reads hit that
  cache. Also the cold case, a fresh run per read (one chunk read from the
  page cache and decoded each time). Target: <= 2 ms.
* **full-scan firing rate**: ``analysis.firing_rate(s, per=...)`` over every
  record, pinned to one CPU core (``sched_setaffinity``), in spike values
  (0/1 entries: records x batch x neurons) per second per core. No target.

Example::

    python tools/bench_read.py                   # Zarr, 100,000 records
    python tools/bench_read.py --backend hdf5 --records 200000
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

import numpy as np

import spikestore
from spikestore import analysis

KEY = "output/bench"
SELECTION = {"every": 1, "start": None, "stop": None, "batch": None, "neurons": None,
             "step_mode": "s", "batch_axis": 0}


def make_store(path: Path, n: int, rate: float, seed: int) -> float:
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


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=0.1, help="fraction of values that are spikes")
    ap.add_argument("--backend", choices=["zarr", "hdf5"], default="zarr")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--store", type=Path, help="where to write the store (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        suffix = ".zarr" if args.backend == "zarr" else ".h5"
        path = args.store or Path(tmp) / f"bench{suffix}"
        write_s = make_store(path, args.records, args.rate, args.seed)
        print(f"wrote {args.records:,} records of (8, 32) float32 spikes at rate {args.rate} to {path} "
              f"({args.backend}) in {write_s:.1f} s")

        # open + len, fresh Run each time
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run = spikestore.open(path)
            n = len(run[KEY])
            times.append(time.perf_counter() - t0)
            run.close()
        assert n == args.records, n
        open_len = statistics.median(times)
        code = ("import time; t = time.perf_counter(); import spikestore; r = spikestore.open(%r); "
                "n = len(r[%r]); print(time.perf_counter() - t)") % (str(path), KEY)
        cold_process = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout)

        # random single-record reads
        rng = np.random.default_rng(args.seed + 1)
        idx = rng.integers(0, n, args.reads)
        run = spikestore.open(path)
        s = run[KEY]
        s[0]
        warm = []
        for i in idx:
            t0 = time.perf_counter()
            rec = s[int(i)]
            warm.append(time.perf_counter() - t0)
        assert rec.shape == (8, 32) and rec.dtype == np.float32
        run.close()
        cold = []
        for i in idx[: max(20, args.reads // 20)]:
            r2 = spikestore.open(path)
            s2 = r2[KEY]
            t0 = time.perf_counter()
            s2[int(i)]
            cold.append(time.perf_counter() - t0)
            r2.close()
        seg = s.segments[0]

        # full scans on one core
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        values = args.records * 8 * 32
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
                assert abs(float(np.mean(result)) - args.rate) < 0.01
        disk = spikestore.open(path).nbytes()

    rows = [
        ("open + len (fresh Run, median)", ms(open_len), "50 ms", f"{open_len / 0.050:.3f}"),
        ("open + len (new process, imports included)", ms(cold_process), "-", "-"),
        ("random s[i], one open run (median)", ms(statistics.median(warm)), "2 ms",
         f"{statistics.median(warm) / 0.002:.3f}"),
        ("random s[i], fresh run each read (median)", ms(statistics.median(cold)), "2 ms",
         f"{statistics.median(cold) / 0.002:.3f}"),
    ]
    for per, t in scans.items():
        rows.append((f"firing_rate(per={per!r}) full scan, 1 core", f"{values / t / 1e9:.2f} G spikes/s",
                     "-", f"{t:.3f} s"))
    rows.append(("  of which reading + decoding the chunks", f"{values / decode_s / 1e9:.2f} G spikes/s", "-",
                 f"{decode_s:.3f} s"))
    width = max(len(r[0]) for r in rows)
    print(f"\nstore: {args.records:,} records, {seg.chunk_records} records per chunk, "
          f"{disk / 2**20:.1f} MiB on disk; 'spikes' = 0/1 values scanned (records x 8 x 32)\n")
    print(f"{'measure':<{width}}  {'result':>18}  {'target':>6}  {'ratio / time':>12}")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>18}  {r[2]:>6}  {r[3]:>12}")
    if args.json:
        args.json.write_text(json.dumps({
            "records": args.records, "backend": args.backend, "open_len_s": open_len,
            "open_len_new_process_s": cold_process, "read_warm_median_s": statistics.median(warm),
            "read_cold_median_s": statistics.median(cold),
            "scan_spikes_per_s": {per: values / t for per, t in scans.items()},
            "decode_spikes_per_s": values / decode_s}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
