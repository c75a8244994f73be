"""Export benchmark: throughput and peak memory while exporting stores of growing size.

Builds stores of ``--sizes`` steps (each step: one binary record of
``--shape`` float32 at ``--rate`` firing, plus one float record a tenth of that
size), then exports each with every format in a fresh subprocess, so the
peak RSS measured (``ru_maxrss`` of the child) belongs to that export alone.
Memory that does not grow with the store size is the claim under test.

    python tools/bench_export.py --sizes 80 320 1280

Exporters decode one chunk at a time, so memory grows with the store only
until the store is one chunk long (64 records of the default shape).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Peak RSS is VmHWM of the child's own address space: ru_maxrss would not do,
# since Linux carries the parent's high-water mark across fork + exec.
CHILD = """
import sys, time, json
from spikestore.export import export
store, out, fmt = sys.argv[1:4]
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
t0, c0 = time.perf_counter(), time.process_time()
export(store, out, fmt, overwrite=True)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "maxrss_kib": hwm()}))
"""


def build(path: Path, steps: int, shape: tuple[int, ...], rate: float) -> int:
    import spikestore

    rng = np.random.default_rng(0)
    pool = [(rng.random(shape) < rate).astype(np.float32) for _ in range(8)]
    vshape = (shape[0], shape[1], max(1, int(np.prod(shape[2:])) // 10))
    vpool = [rng.standard_normal(vshape).astype(np.float32) for _ in range(4)]
    with spikestore.Store(path, mode="w", overwrite=True) as st:
        for i in range(steps):
            st.set_step(i)
            st.append("output/lif", pool[i % 8])
            st.append("v_seq/lif", vpool[i % 4])
        st.set_stream_info("output/lif", selection={"step_mode": "m", "batch_axis": 1})
    return steps * (int(np.prod(shape)) + int(np.prod(vshape)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[80, 320, 1280],
                    help="steps per store (default 80 320 1280: 1 to 20 chunks of the default shape)")
    ap.add_argument("--shape", default="8,32,16,28", help="spike record shape (T, N, ...)")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--formats", nargs="+", default=["npz", "hdf5", "parquet", "nwb"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    shape = tuple(int(x) for x in args.shape.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="spikestore-export-"))
    rows = []
    try:
        for steps in args.sizes:
            store = tmp / f"s{steps}.zarr"
            values = build(store, steps, shape, args.rate)
            size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
            for fmt in args.formats:
                out = tmp / f"s{steps}.{ 'nwb' if fmt == 'nwb' else fmt if fmt != 'parquet' else 'pq'}"
                r = subprocess.run([sys.executable, "-c", CHILD, str(store), str(out), fmt],
                                   capture_output=True, text=True)
                if r.returncode:
                    print(r.stderr, file=sys.stderr)
                    return 1
                m = json.loads(r.stdout.strip().splitlines()[-1])
                rows.append({"steps": steps, "format": fmt, "values": values, "store_bytes": size,
                             "values_per_s_per_core": values / m["cpu"], "wall_s": m["wall"],
                             "peak_rss_mib": m["maxrss_kib"] / 1024})
                shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
            shutil.rmtree(store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'steps':>6} {'store MiB':>9} {'format':>8} {'M values/s/core':>16} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['steps']:>6} {r['store_bytes'] / 2**20:>9.1f} {r['format']:>8} "
              f"{r['values_per_s_per_core'] / 1e6:>16.1f} {r['peak_rss_mib']:>13.0f}")
    for fmt in args.formats:
        rs = [r for r in rows if r["format"] == fmt]
        if len(rs) > 1:
            print(f"{fmt}: peak RSS {rs[0]['peak_rss_mib']:.0f} -> {rs[-1]['peak_rss_mib']:.0f} MiB while the "
                  f"store grew {rs[-1]['store_bytes'] / rs[0]['store_bytes']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
