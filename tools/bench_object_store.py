"""Benchmark: recording to object storage (``s3://`` on a loopback S3 server) relative to local disk.

Reports, in one run:

* **throughput**: the reference workload's four LIF output streams
  (``tools/workload.py``: ~4.9 M spikes, 19.5 MB as float32 a step), recorded
  for ``--steps`` steps from pre-made frames (no training: the writer is the
  whole cost) to a local Zarr folder and to ``s3://`` on moto's S3 server
  started on ``127.0.0.1``, runs alternated; MB/s of float32 input from the
  first ``append`` to the end of ``close()``, and the median ratio
  S3 / local over the pairs;
* **A/B of the local store**: seconds per chunk written by the Zarr
  backend's own local files (``LocalKeys``, the fast path) and through
  zarr's ``LocalStore`` on zarr's event loop (``ZarrStoreKeys``), alternated;
  ``docs/object-storage.md`` §5 says why the fast path stays.

moto keeps every object in its own process's memory and answers over HTTP
on loopback: no network latency, but each request pays HTTP parsing and
moto's bookkeeping, so the ratio is a floor for the client-side cost, not a
prediction for AWS (whose latency is ~10-50 ms a PUT, hidden only by
writing several streams at once).

Example::

    python tools/bench_object_store.py --steps 10 --pairs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import spikestore  # noqa: E402
from spikestore.backends import ArraySpec, StoreURL  # noqa: E402
from spikestore.backends._keys import LocalKeys  # noqa: E402
from spikestore.backends._remote import ZarrStoreKeys  # noqa: E402
from spikestore.backends._zarr import ZarrBackend  # noqa: E402
from spikestore.codecs._chunk import codec_for  # noqa: E402

#: The reference workload's LIF outputs (T=8, batch 32): tools/workload.py's LIF_SHAPES.
LIF_SHAPES = {"2": (8, 32, 16, 28, 28), "6": (8, 32, 32, 14, 14), "10": (8, 32, 256), "12": (8, 32, 10)}


def frames(steps: int, rate: float, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """One float32 0/1 frame per layer and step, made before timing."""
    rng = np.random.default_rng(seed)
    return [{k: (rng.random(s, dtype=np.float32) < rate).astype(np.float32) for k, s in LIF_SHAPES.items()}
            for _ in range(steps)]


def record(where: str | Path, data: list[dict[str, np.ndarray]], **kw: Any) -> float:
    """Seconds to record ``data`` to ``where``, ``close()`` included."""
    t0 = time.perf_counter()
    with spikestore.Store(where, mode="w", **kw) as store:
        for step, layers in enumerate(data):
            store.set_step(step)
            for layer, x in layers.items():
                store.append(f"output/{layer}", x)
    return time.perf_counter() - t0


def chunk_ab(root: Path, chunks: int, rounds: int) -> dict[str, float]:
    """Median seconds per chunk written through LocalKeys and through zarr's LocalStore, alternated."""
    from zarr.storage import LocalStore

    shape = LIF_SHAPES["6"]
    packed = (*shape[:-1], (shape[-1] + 7) // 8)
    codec = codec_for("bits", np.dtype("uint8"), record_bytes=int(np.prod(packed)), row_bits=shape[-1])
    spec = ArraySpec(packed, np.dtype("uint8"), 1, codec)
    rng = np.random.default_rng(1)
    payload = codec.encode(np.packbits(rng.random((1, *shape)) < 0.1, axis=-1, bitorder="little"))
    times: dict[str, list[float]] = {"local files (fast path)": [], "zarr LocalStore": []}
    for r in range(rounds):
        for name in times:
            path = root / f"ab-{r}-{uuid.uuid4().hex[:6]}.zarr"
            keys = None if name.startswith("local") else ZarrStoreKeys(LocalStore(path), str(path))
            be = ZarrBackend(path, writable=True, keys=keys or LocalKeys(path))
            be.create_array("a", spec)
            t0 = time.perf_counter()
            for c in range(chunks):
                be.write_chunk("a", c, payload, new=True)
                be.set_length("a", c + 1, exact=False)
            times[name].append((time.perf_counter() - t0) / chunks)
    return {name: statistics.median(v) for name, v in times.items()} | {"chunk_bytes": len(payload)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--steps", type=int, default=10, help="steps recorded per run (19.5 MB of float32 each)")
    p.add_argument("--pairs", type=int, default=3, help="local/S3 run pairs, alternated")
    p.add_argument("--rate", type=float, default=0.1, help="firing rate of the frames")
    p.add_argument("--ab-chunks", type=int, default=200, help="chunks per round of the LocalStore A/B")
    p.add_argument("--ab-rounds", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    opts = {"endpoint_url": endpoint, "key": "bench", "secret": "bench",
            "client_kwargs": {"region_name": "us-east-1"}}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket="bench")
    data = frames(args.steps, args.rate)
    mb = sum(x.nbytes for layers in data for x in layers.values()) / 1e6
    results: dict[str, Any] = {"steps": args.steps, "input_mb": mb, "rate": args.rate, "pairs": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            record(Path(tmp) / "warm.zarr", data[:1])  # kernels loaded, caches warm
            record(StoreURL(f"s3://bench/warm-{uuid.uuid4().hex[:6]}.zarr", opts), data[:1], lock=False)
            for i in range(args.pairs):
                local = record(Path(tmp) / f"run{i}.zarr", data)
                s3 = record(StoreURL(f"s3://bench/run{i}.zarr", opts), data, lock=False)
                results["pairs"].append({"local_s": local, "s3_s": s3, "ratio": s3 / local})
                print(f"pair {i}: local {mb / local:7.1f} MB/s   s3 {mb / s3:7.1f} MB/s   "
                      f"s3/local time {s3 / local:.2f}x", flush=True)
            stored = spikestore.open(StoreURL("s3://bench/run0.zarr", opts)).nbytes()
            results["stored_bytes"] = stored
            results["ab"] = chunk_ab(Path(tmp), args.ab_chunks, args.ab_rounds)
    finally:
        server.stop()
    ratios = [r["ratio"] for r in results["pairs"]]
    results["median_ratio"] = statistics.median(ratios)
    local_mbs = statistics.median(mb / r["local_s"] for r in results["pairs"])
    s3_mbs = statistics.median(mb / r["s3_s"] for r in results["pairs"])
    print(f"\n{args.steps} steps, {mb:.0f} MB of float32 spikes ({results['stored_bytes'] / 1e6:.1f} MB stored)")
    print(f"median throughput: local {local_mbs:.1f} MB/s, s3 (loopback moto) {s3_mbs:.1f} MB/s; "
          f"median time ratio s3/local {results['median_ratio']:.2f}x (throughput {1 / results['median_ratio']:.2f}x)")
    ab = results["ab"]
    fast, zl = ab["local files (fast path)"], ab["zarr LocalStore"]
    print(f"A/B per chunk of {ab['chunk_bytes']} B (+ zarr.json when the length grows): local files "
          f"{fast * 1e6:.0f} us, zarr LocalStore {zl * 1e6:.0f} us ({zl / fast:.2f}x, +{(zl - fast) * 1e6:.0f} us)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
