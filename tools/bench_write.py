"""Benchmark of the write path alone: ``Store.append`` of binary float32 frames.

Reports, in one run:

* throughput in spikes (values) per second, per wall second and per CPU
  second of the whole process (``time.process_time``: all threads), which is
  the "per core" figure;
* bytes on disk over the Shannon bound ``n * H(p) / 8`` of i.i.d. Bernoulli
  spikes;
* resident memory (RSS) sampled over a run of at least ``--gb`` GB of
  float32 input, and its growth after warm-up;
* where the CPU goes, one thread at a time on the same frames: reading each
  frame once (the memory ceiling of any writer that takes float32 input),
  the hook's check-and-pack, and the writer's chunk coding. Pack + code
  (the pack is the read) bounds what the whole path can reach per core.

``tools/ab_kernels.py`` runs this write loop (:func:`write_frames`) for an
alternated A/B of two packing kernels in one process.

Example::

    python tools/bench_write.py --gb 10 --rate 0.05
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

import spikestore
from spikestore.codecs._chunk import codec_from_config
from spikestore.codecs._packing import Packer


def shannon_bytes(n: int, p: float) -> float:
    h = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return n * h / 8


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class RssSampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter(), self.proc.memory_info().rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _cpu_per_item(fn, items: list, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Median over ``repeats`` passes of the thread CPU seconds ``fn`` takes per item."""
    passes = []
    for _ in range(repeats):
        t = time.thread_time()
        for item in items:
            fn(item)
        passes.append((time.thread_time() - t) / len(items))
    return statistics.median(passes)


def cost_breakdown(pool: list[torch.Tensor], segment: dict, repeats: int = 5) -> dict[str, float]:
    """Thread CPU seconds per frame of each stage of the write path, run alone.

    * ``read``: one pass over the frame's float32 values (``np.count_nonzero``
      of its bits), the least any writer of float32 input must spend;
    * ``pack``: the hook's check-and-pack (:class:`spikestore.codecs._packing.Packer`);
    * ``code``: the writer's encoding of a chunk of packed frames with the
      codec and chunk size the run's ``segment`` (its document) got, per frame.

    The pool is cycled as in the run, so the frames come from memory, not cache.
    """
    frames = [f.numpy() for f in pool]
    words = [f.reshape(-1).view(np.uint32) for f in frames]
    packer = Packer()
    packed = [packer.pack(f).copy() for f in frames]  # type: ignore[union-attr]
    per_chunk = segment["chunk_records"]
    codec = codec_from_config(segment["codec"])
    chunks = [np.stack([packed[(i + j) % len(packed)] for j in range(per_chunk)])
              for i in range(0, len(packed), per_chunk)]
    return {
        "read": _cpu_per_item(np.count_nonzero, words, repeats),
        "pack": _cpu_per_item(packer.pack, frames, repeats),
        "code": _cpu_per_item(codec.encode, chunks, repeats) / per_chunk,
    }


def make_pool(shape: tuple[int, ...], rate: float, size: int) -> list[torch.Tensor]:
    """``size`` distinct random binary float32 frames of ``shape`` firing at ``rate`` (seeded)."""
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(shape, generator=g) < rate).float() for _ in range(size)]


def write_frames(path: Path, backend: str, pool: list[torch.Tensor], n_frames: int, warm: int,
                 progress: bool = False) -> dict[str, float]:
    """Append ``n_frames`` frames (the pool cycled) to a new store at ``path``, then close it.

    Returns the clocks (``time.perf_counter`` as ``wall*``, the process's CPU
    time of all threads as ``cpu*``) at the start, once the first ``warm``
    frames are flushed (``*_warm``), and after ``close()`` (``*1``).
    """
    store = spikestore.Store(path, mode="w", backend=backend)
    clock = {"wall0": time.perf_counter(), "cpu0": time.process_time()}
    for i in range(n_frames):
        if i == warm:
            store.flush()
            clock["wall_warm"], clock["cpu_warm"] = time.perf_counter(), time.process_time()
        store.set_step(i)
        store.append("output/lif1", pool[i % len(pool)])
        if progress and i % 100 == 0:
            print(f"\r{i}/{n_frames} frames", end="", file=sys.stderr, flush=True)
    store.close()
    clock["wall1"], clock["cpu1"] = time.perf_counter(), time.process_time()
    return clock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=10.0, help="GB of float32 input to append (default 10)")
    ap.add_argument("--rate", type=float, default=0.05, help="firing probability (default 0.05)")
    ap.add_argument("--shape", default="8,32,16,28,28", help="frame shape (default: the reference LIF1 output)")
    ap.add_argument("--backend", choices=["zarr", "hdf5"], default="zarr")
    ap.add_argument("--pool", type=int, default=16, help="distinct random frames cycled through")
    ap.add_argument("--dir", default=None, help="where to write the store (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the results here as JSON")
    args = ap.parse_args(argv)

    shape = tuple(int(s) for s in args.shape.split(","))
    pool = make_pool(shape, args.rate, args.pool)
    frame_bytes = pool[0].numel() * 4
    n_frames = max(args.pool, math.ceil(args.gb * 1e9 / frame_bytes))
    warm = max(1, n_frames // 10)

    root = Path(args.dir or tempfile.mkdtemp(prefix="spikestore-bench-"))
    path = root / ("write.h5" if args.backend == "hdf5" else "write.zarr")
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    sampler = RssSampler()
    sampler.start()
    clock = write_frames(path, args.backend, pool, n_frames, warm, progress=True)
    w0, c0, t_warm, c_warm, w1, c1 = (clock[k] for k in ("wall0", "cpu0", "wall_warm", "cpu_warm", "wall1", "cpu1"))
    sampler.stop()
    print(file=sys.stderr)

    with spikestore.open(path) as run:
        segment = run["output/lif1"].segments[0].doc
    print("timing each stage alone ...", file=sys.stderr)
    cost = cost_breakdown(pool, segment)

    spikes = n_frames * pool[0].numel()
    timed = (n_frames - warm) * pool[0].numel()
    on_disk = dir_bytes(path)
    rss = sampler.samples
    rss_at_warm = min((r for t, r in rss if t >= t_warm), default=rss[0][1])
    peak_after = max(r for t, r in rss if t >= t_warm)
    n_ones = sum(int(f.sum()) for f in pool) * (n_frames / len(pool))
    p_emp = n_ones / spikes
    res = {
        "backend": args.backend,
        "frame_shape": list(shape),
        "firing_rate": args.rate,
        "frames": n_frames,
        "input_gb": spikes * 4 / 1e9,
        "wall_s": w1 - w0,
        "cpu_s": c1 - c0,
        "spikes_per_s_wall": timed / (w1 - t_warm),
        "spikes_per_s_per_core": timed / (c1 - c_warm),
        "cores_busy": (c1 - c_warm) / (w1 - t_warm),
        "bytes_on_disk": on_disk,
        "shannon_bytes": shannon_bytes(spikes, p_emp),
        "ratio_to_shannon": on_disk / shannon_bytes(spikes, p_emp),
        "ratio_to_float32": on_disk / (spikes * 4),
        "rss_start_mib": rss[0][1] / 2**20,
        "rss_after_warmup_mib": rss_at_warm / 2**20,
        "rss_peak_mib": max(r for _, r in rss) / 2**20,
        "rss_growth_after_warmup_mib": (peak_after - rss_at_warm) / 2**20,
        "alone_ms_per_frame": {k: v * 1e3 for k, v in cost.items()},
        "alone_spikes_per_s_per_core": {k: pool[0].numel() / v for k, v in cost.items()},
    }
    print(f"write path, {args.backend}: {n_frames} frames of {shape} float32, p={args.rate}, "
          f"{res['input_gb']:.1f} GB input")
    print(f"  throughput        {res['spikes_per_s_wall'] / 1e9:6.3f} G spikes/s wall, "
          f"{res['spikes_per_s_per_core'] / 1e9:6.3f} G spikes/s per core "
          f"({res['cores_busy']:.2f} cores busy)")
    print(f"  on disk           {on_disk / 2**20:8.1f} MiB = {res['ratio_to_shannon']:.3f} x Shannon bound, "
          f"{res['ratio_to_float32'] * 100:.2f}% of float32")
    print(f"  RSS               start {res['rss_start_mib']:.0f} MiB, after warm-up "
          f"{res['rss_after_warmup_mib']:.0f} MiB, peak {res['rss_peak_mib']:.0f} MiB, "
          f"growth after warm-up {res['rss_growth_after_warmup_mib']:.1f} MiB")
    per = pool[0].numel()
    print(f"  alone, per frame  read the input {cost['read'] * 1e3:.2f} ms ({per / cost['read'] / 1e9:.2f} G/s), "
          f"pack {cost['pack'] * 1e3:.2f} ms, code {cost['code'] * 1e3:.2f} ms; "
          f"pack + code {per / (cost['pack'] + cost['code']) / 1e9:.2f} G spikes/s per core")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
