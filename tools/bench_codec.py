"""Spike codec benchmark: size against the Shannon bound, speed, GIL behaviour.

For i.i.d. Bernoulli spikes at several firing rates, each record goes
through ``spikestore.Store`` (the real write path) and the bytes on disk of
the spike data are compared with the Shannon bound ``n * H(p) / 8``. Next to
it, the same packed chunks are compressed by the two baselines:
``np.packbits`` + zstd (level 1) and the tutorial's ``zlib.compress`` of the
packed bytes. Speeds are encode/decode spikes per second of one core.

``--real`` also records the reference workload's LIF outputs (tools/workload.py)
for a few training steps and reports bytes per spike, where the i.i.d. bound
does not apply.

The GIL column is the speed of a pure-Python thread counting while the codec
runs, relative to the same thread running alone: near 1.0 means the codec
released the GIL and the training thread would keep running.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import Zstd

import spikestore
from spikestore.codecs import _packing as packing
from spikestore.codecs._spikes import MODES, decode_spikes, encode_spikes

RATES = (0.5, 0.2, 0.05, 0.01, 0.002)


def shannon_bytes(n: int, p: float) -> float:
    if p <= 0 or p >= 1:
        return 0.0  # a silent (or saturated) layer carries no information
    return n * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def gil_ratio(fn, seconds: float = 0.4) -> float:
    """Speed of a counting Python thread while ``fn`` runs in a loop, over its speed alone."""
    def count(stop: threading.Event, out: list[int]) -> None:
        n = 0
        while not stop.is_set():
            n += 1
        out.append(n)

    def rate(busy: bool) -> float:
        stop, out = threading.Event(), []
        t = threading.Thread(target=count, args=(stop, out))
        t0 = time.perf_counter()
        t.start()
        while time.perf_counter() - t0 < seconds:
            fn() if busy else time.sleep(0.01)
        stop.set()
        t.join()
        return out[0] / (time.perf_counter() - t0)

    alone = rate(False)
    return rate(True) / alone


def stream_bytes(path: Path, key: str) -> int:
    # The segments' stored chunks (with each array's small zarr.json, negligible at these sizes).
    return sum(seg.nbytes() for seg in spikestore.open(path)[key].segments)


def _codec_row(chunk: np.ndarray, packed_all: list[np.ndarray], bound: float, repeats: int) -> dict[str, Any]:
    """Ratios and speeds of spikestore's codec, zstd and zlib on one packed chunk (a row of the table)."""
    chunk_spikes = chunk.size * 8
    enc = encode_spikes(chunk)
    zstd = Zstd(level=1)
    z_enc = zstd.encode(chunk)
    zl_enc = zlib.compress(chunk.tobytes())
    return {
        "mode": MODES[enc[1]],
        "zstd_ratio": sum(len(zstd.encode(c)) for c in packed_all) / bound,
        "zlib_ratio": sum(len(zlib.compress(c.tobytes())) for c in packed_all) / bound,
        "ours_enc": chunk_spikes / median_time(lambda: encode_spikes(chunk), repeats),
        "ours_dec": chunk_spikes / median_time(lambda: decode_spikes(enc), repeats),
        "zstd_enc": chunk_spikes / median_time(lambda: zstd.encode(chunk), repeats),
        "zstd_dec": chunk_spikes / median_time(lambda: zstd.decode(z_enc), repeats),
        "zlib_enc": chunk_spikes / median_time(lambda: zlib.compress(chunk.tobytes()), repeats),
        "zlib_dec": chunk_spikes / median_time(lambda: zlib.decompress(zl_enc), repeats),
        "gil_ours": gil_ratio(lambda: encode_spikes(chunk)),
        "gil_zstd": gil_ratio(lambda: zstd.encode(chunk)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spikes", type=int, default=1 << 25, help="spikes per rate (default 33.5 M)")
    ap.add_argument("--record", type=int, default=1 << 20, help="spikes per record (default 1 M)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--real", action="store_true", help="also measure the reference workload's spikes")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    packing.load_kernels()  # before timing: the first encode would otherwise load them
    tmp = Path(tempfile.mkdtemp(prefix="spikestore-codec-"))
    rng = np.random.default_rng(0)
    rows = []
    for p in RATES:
        n_rec = max(1, args.spikes // args.record)
        recs = [(rng.random(args.record) < p).astype(np.float32).reshape(-1, 1024) for _ in range(n_rec)]
        ones = sum(int(r.sum()) for r in recs)
        n = n_rec * args.record
        bound = shannon_bytes(n, ones / n)
        path = tmp / f"p{p}.zarr"
        with spikestore.Store(path) as store:
            for r in recs:
                store.append("output/x", r)
        ours = stream_bytes(path, "output/x")
        seg = spikestore.open(path)["output/x"].segments[0]
        chunk = np.packbits(np.stack(recs[: seg.chunk_records]).astype(bool), axis=-1, bitorder="little")
        packed_all = [np.packbits(r.astype(bool), axis=-1, bitorder="little") for r in recs]
        rows.append({"p": p, "ours_ratio": ours / bound, **_codec_row(chunk, packed_all, bound, args.repeats)})
    print("i.i.d. Bernoulli spikes, bytes on disk over the Shannon bound n*H(p)/8, and speed per core")
    print(f"{'p':>6} {'spikestore':>10} {'mode':>12} {'packbits+zstd':>14} {'zlib':>7}   "
          f"{'enc G/s':>8} {'dec G/s':>8} {'zstd enc':>9} {'zstd dec':>9} {'zlib enc':>9}  "
          f"{'GIL ours':>8} {'GIL zstd':>8}")
    for r in rows:
        print(f"{r['p']:>6} {r['ours_ratio']:>10.3f} {r['mode']:>12} {r['zstd_ratio']:>14.3f} "
              f"{r['zlib_ratio']:>7.3f}   "
              f"{r['ours_enc'] / 1e9:>8.2f} {r['ours_dec'] / 1e9:>8.2f} {r['zstd_enc'] / 1e9:>9.2f} "
              f"{r['zstd_dec'] / 1e9:>9.2f} {r['zlib_enc'] / 1e9:>9.2f}  {r['gil_ours']:>8.2f} {r['gil_zstd']:>8.2f}")
    result = {"iid": rows}

    if args.real:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from spikingjelly.activation_based import neuron
        from workload import build_net, make_batches, train_steps  # type: ignore[import-not-found]

        from spikestore import monitor

        net, opt = build_net()
        path = tmp / "real.zarr"
        store = spikestore.Store(path)
        mon = monitor.OutputMonitor(net, neuron.LIFNode, store=store)
        train_steps(net, opt, make_batches(10, 0), on_step=store.set_step)
        mon.remove_hooks()
        store.close()
        run = spikestore.open(path)
        real = []
        print("\nreference workload (tools/workload.py), 10 steps, every LIF output")
        print(f"{'stream':>10} {'spikes':>12} {'rate':>7} {'bytes':>10} {'bits/spike':>10} "
              f"{'iid bound':>10} {'packbits+zstd':>14}")
        for key in run.streams:
            s = run[key]
            data = np.stack([s[i] for i in range(len(s))])
            n, ones = data.size, int(data.sum())
            ours = stream_bytes(path, key)
            zb = sum(len(Zstd(level=1).encode(np.packbits(s[i].astype(bool), axis=-1, bitorder="little")))
                     for i in range(len(s)))
            p = ones / n
            real.append({"stream": key, "values": n, "rate": p, "bytes": ours,
                         "bits_per_value": 8 * ours / n, "iid_bound_bits": 8 * shannon_bytes(n, p) / n,
                         "zstd_bytes": zb})
            print(f"{key:>10} {n:>12} {p:>7.4f} {ours:>10} {8 * ours / n:>10.4f} "
                  f"{8 * shannon_bytes(n, p) / n:>10.4f} {zb:>14}")
        result["real"] = real
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
