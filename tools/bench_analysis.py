"""Benchmark of distributed analysis: spikestore.analysis and to_dask() with no client, 1 and 2 workers.

Writes a store of ``--streams`` multi-step spike streams, ``--steps`` records
each of shape ``(T, batch, neurons)`` = ``(8, 32, --neurons)`` at firing rate
``--rate``, in stored chunks of ``--chunk-mb`` MB (so a pass has several
chunks, i.e. tasks, per stream), then times, per round and in the same
order every round:

* ``local``: no client; the plain in-process loop (what every user without
  a cluster gets);
* ``1 worker`` and ``2 workers``: a ``distributed.LocalCluster`` of that many
  worker processes, one thread each, loopback only, made the current client
  with ``Client.as_current()`` (both clusters live the whole run, idle when
  not measured).

Measured passes: ``firing_rate(s)`` (per neuron: unpacks every bit),
``spike_counts(s)`` (per record: a popcount of the packed bytes),
``population_rate(s)`` and ``s.to_dask().sum()`` (decodes to float32). Reported:
the median time over ``--rounds`` of a pass over every stream, the
throughput in spike values (0/1 entries) per second, and the ratio of each
to ``local``. Only ratios from one run mean anything on this shared
machine; with two cores, two workers can at best halve a pass, and any
other load on the machine takes from that.

Example::

    python tools/bench_analysis.py                      # ~170 M values, 3 rounds
    python tools/bench_analysis.py --steps 64 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import spikestore
from spikestore import analysis
from spikestore._integrations.distributed import active_client

T, BATCH = 8, 32


def write(path: Path, streams: int, steps: int, neurons: int, rate: float, chunk_mb: float) -> int:
    """Write the store; return the number of spike values in it."""
    rng = np.random.default_rng(0)
    with spikestore.Store(path, mode="w", chunk_bytes=int(chunk_mb * 2**20)) as store:
        for k in range(streams):
            store.set_stream_info(f"output/l{k}", selection={"step_mode": "m", "batch_axis": 1})
        for step in range(steps):
            store.set_step(step)
            for k in range(streams):
                store.append(f"output/l{k}", (rng.random((T, BATCH, neurons), np.float32) < rate).astype(np.float32))
    return streams * steps * T * BATCH * neurons


def passes(run: spikestore.Run, client: Any) -> dict[str, Callable[[], Any]]:
    """One callable per measured pass over every stream of ``run``."""
    streams = [run[k] for k in run.streams]
    return {
        "firing_rate (per neuron)": lambda: [analysis.firing_rate(s) for s in streams],
        "spike_counts (per record)": lambda: [analysis.spike_counts(s) for s in streams],
        "population_rate": lambda: [analysis.population_rate(s) for s in streams],
        "to_dask().sum()": lambda: [s.to_dask().sum().compute(scheduler=client) for s in streams],
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--neurons", type=int, default=8192)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--chunk-mb", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        values = write(path, args.streams, args.steps, args.neurons, args.rate, args.chunk_mb)
        run = spikestore.open(path)
        chunks = sum(seg.nchunks for k in run.streams for seg in run[k].segments)
        print(f"store: {values / 1e6:.0f} M spike values, {chunks} stored chunks, "
              f"{run.nbytes() / 2**20:.1f} MiB on disk, written in {time.perf_counter() - t0:.1f} s; "
              f"{os.cpu_count()} CPUs")
        clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=None) for n in (1, 2)}
        clients = {n: Client(c, set_as_default=False) for n, c in clusters.items()}
        try:
            modes: dict[str, Any] = {"local": None, "1 worker": clients[1], "2 workers": clients[2]}
            times: dict[tuple[str, str], list[float]] = {}
            answers: dict[tuple[str, str], Any] = {}
            for rnd in range(args.rounds + 1):  # round 0 warms up (workers open the store, import numpy...)
                for mode, client in modes.items():
                    if client is None:
                        assert active_client() is None
                        todo = passes(run, "threads")
                        results = {name: timed(fn) for name, fn in todo.items()}
                    else:
                        with client.as_current():
                            todo = passes(run, client)
                            results = {name: timed(fn) for name, fn in todo.items()}
                    for name, (sec, out) in results.items():
                        if rnd:
                            times.setdefault((name, mode), []).append(sec)
                        answers.setdefault((name, mode), out)
            for name in passes(run, None):
                for mode in modes:  # the same answers on every path
                    for a, b in zip(answers[(name, mode)], answers[(name, "local")], strict=True):
                        np.testing.assert_array_equal(np.asarray(getattr(a, "values", a)),
                                                      np.asarray(getattr(b, "values", b)))
            print(f"\nmedian of {args.rounds} rounds; throughput in M spike values/s; ratio = local time / this time")
            print(f"{'pass':28s}" + "".join(f"{m:>24s}" for m in modes))
            for name in passes(run, None):
                base = statistics.median(times[(name, "local")])
                cells = []
                for mode in modes:
                    med = statistics.median(times[(name, mode)])
                    cells.append(f"{med * 1e3:7.0f} ms {values / med / 1e6:6.0f} x{base / med:4.2f}")
                print(f"{name:28s}" + "".join(f"{c:>24s}" for c in cells))
        finally:
            for c in clients.values():
                c.close()
            for c in clusters.values():
                c.close()
            run.close()


if __name__ == "__main__":
    main()
