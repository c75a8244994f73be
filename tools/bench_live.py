#!/usr/bin/env python
"""Figures of the live views (docs/live.md, "Measured"): what following a run costs.

Parts (run the ones named, every part without one):

``--refresh``
    A writer in another process appends ``--records`` binary records of
    ``--shape`` (one record a step, so the per-step history is decimated all
    the way) to a Zarr store, flushing every ``--flush`` seconds, while this
    process follows it with :class:`spikestore.live.Follower`, refreshing
    every ``--interval`` seconds. Reports the refresh cost per new record
    (median over refreshes, early and late in the run), the cost of a
    refresh that finds nothing new, and the follower's RSS as the run grows,
    then one refresh of a fresh follower over the whole finished run.

``--page``
    ``spikestore serve`` in Debian's chromium (tools/bench_live_page.py): the
    time until the page of a ``--page-records`` run shows its plots (median
    of ``--page-loads`` loads), the time from a flush until the page shows
    it (20 flushes, ``--interval 1``), and the reference workload's ms/step with and
    without a page open (``--page-pairs`` alternated pairs).

Each part is a function ``bench_<name>(args) -> dict`` registered in
:data:`PARTS` with its own options (``add_<name>_options``); ``--json PATH``
writes every part's figures. Run from the repository root::

    python tools/bench_live.py --refresh --records 1000000
    python tools/bench_live.py --page --page-pairs 7
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import spikestore  # (after the path line, so that the checkout's spikestore is measured)
from spikestore.live import Follower


def rss_bytes() -> int:
    """This process's resident set size (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize()


# -- refresh ------------------------------------------------------------------------------------------------

def write_run(path: str, records: int, shape: tuple[int, ...], flush: float, rate: float) -> None:
    """The writer process: ``records`` spike records of ``shape`` (firing ``rate``), one a step."""
    rng = np.random.default_rng(0)
    with spikestore.Store(path, flush_interval=flush) as store:
        for i in range(records):
            if i % 4096 == 0:  # fresh random records (a pool repeated would compress far below the entropy)
                pool = (rng.random((4096, *shape)) < rate).astype(np.float32)
            store.append("output/fc", pool[i % 4096], step=i)


def add_refresh_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--refresh")
    g.add_argument("--records", type=int, default=1_000_000, help="records the writer appends (default 1M)")
    g.add_argument("--shape", type=lambda s: tuple(int(x) for x in s.split(",")), default=(4, 64),
                   help="record shape, comma-separated (default 4,64: [T, neurons])")
    g.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes")
    g.add_argument("--flush", type=float, default=0.5, help="the writer's flush_interval")
    g.add_argument("--firing", type=float, default=0.1, help="firing rate of the records")
    g.add_argument("--history", type=int, default=2000)
    g.add_argument("--window", type=int, default=100)


def bench_refresh(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        warm = str(Path(tmp) / "warm.zarr")  # load the decoders (lazy imports) before anything is timed
        write_run(warm, 10_000, args.shape, args.flush, args.firing)
        with Follower(warm) as f:
            f.refresh()
        path = str(Path(tmp) / "follow.zarr")
        ctx = multiprocessing.get_context("spawn")
        writer = ctx.Process(target=write_run, args=(path, args.records, args.shape, args.flush, args.firing))
        began = time.perf_counter()
        writer.start()
        while not (Path(path) / "zarr.json").exists():  # the store appears when the writer opens it
            if not writer.is_alive():
                raise SystemExit(f"the writer exited ({writer.exitcode}) before creating {path}")
            time.sleep(0.05)
        rss0 = rss_bytes()
        rows: list[tuple[int, int, float, int]] = []  # (records, new, seconds, rss)
        with Follower(path, window=args.window, history=args.history) as f:
            done = False
            while not done:
                done = not writer.is_alive()  # one last refresh after the writer closed
                snap = f.refresh()
                s = snap.streams.get("output/fc")
                rows.append((0 if s is None else s.records, snap.new_records, snap.refresh_seconds, rss_bytes()))
                if not done:
                    time.sleep(args.interval)
            idle = [f.refresh().refresh_seconds for _ in range(5)]
            final = f.refresh().streams["output/fc"]
        writer.join()
        wall = time.perf_counter() - began
        fresh_began = time.perf_counter()
        with Follower(path, window=args.window, history=args.history) as g:
            whole = g.refresh()
        fresh = time.perf_counter() - fresh_began
        on_disk, bits = whole.streams["output/fc"].bytes_on_disk, whole.streams["output/fc"].bits_per_spike
    grew = [(n, new, sec) for n, new, sec, _ in rows if new > 0]
    third = max(1, args.records // 3)
    early = [sec / new for n, new, sec in grew if n <= third]
    late = [sec / new for n, new, sec in grew if n > 2 * third]
    rss_at = {}
    for frac in (0.1, 0.5, 1.0):
        at = next((r for n, _, _, r in rows if n >= frac * args.records), rows[-1][3])
        rss_at[f"{int(frac * 100)}%"] = at - rss0
    result = {
        "records": args.records, "shape": list(args.shape), "refreshes": len(rows), "wall_seconds": wall,
        "records_seen": final.records, "history_points": len(final.steps),
        "median_us_per_new_record": 1e6 * statistics.median(sec / new for _, new, sec in grew),
        "median_us_per_new_record_first_third": 1e6 * statistics.median(early) if early else None,
        "median_us_per_new_record_last_third": 1e6 * statistics.median(late) if late else None,
        "median_new_records_per_refresh": statistics.median(new for _, new, _ in grew),
        "median_refresh_ms": 1e3 * statistics.median(sec for _, _, sec in grew),
        "idle_refresh_ms": 1e3 * statistics.median(idle),
        "rss_growth_mb": {k: v / 2**20 for k, v in rss_at.items()},
        "rss_growth_max_mb": (max(r for *_, r in rows) - rss0) / 2**20,
        "fresh_follower_seconds": fresh, "fresh_records_per_second": whole.new_records / fresh,
        "bytes_on_disk": on_disk, "bits_per_spike": bits,
    }
    print(f"refresh: followed {final.records:,} records of {list(args.shape)} (one a step) over {len(rows)} "
          f"refreshes in {wall:.0f} s")
    print(f"  refresh cost per new record, median: {result['median_us_per_new_record']:.2f} us "
          f"(first third of the run {result['median_us_per_new_record_first_third']:.2f} us, last third "
          f"{result['median_us_per_new_record_last_third']:.2f} us); median refresh "
          f"{result['median_refresh_ms']:.1f} ms for {result['median_new_records_per_refresh']:,.0f} new records")
    print(f"  refresh with nothing new: {result['idle_refresh_ms']:.1f} ms")
    print("  follower RSS growth at " + ", ".join(f"{k} of the run: {v:+.1f} MiB"
                                                   for k, v in result["rss_growth_mb"].items())
          + f" (max {result['rss_growth_max_mb']:+.1f} MiB); history {len(final.steps)} points")
    print(f"  a fresh follower over the finished run: {fresh:.2f} s ({result['fresh_records_per_second']:,.0f} "
          f"records/s); {on_disk / 2**20:.1f} MiB on disk, {bits:.2f} bits per spike")
    return result


# -- page (spikestore serve; the work is in tools/bench_live_page.py) -----------------------------------------

def add_page_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--page")
    g.add_argument("--page-records", type=int, default=100_000, help="records of the run whose page loads")
    g.add_argument("--page-loads", type=int, default=7, help="page loads timed (after one warm-up load)")
    g.add_argument("--page-pairs", type=int, default=7, help="alternated pairs of reference-workload runs")
    g.add_argument("--page-steps", type=int, default=20, help="timed steps of each reference-workload run")


def bench_page(args: argparse.Namespace) -> dict[str, Any]:
    """Page load of a long run in chromium, flush-to-page delay, and the workload's step with and without a page."""
    import bench_live_page as page

    load = page.load_main(argparse.Namespace(records=args.page_records, loads=args.page_loads, tmp=None))
    follow = page.follow_main(argparse.Namespace(flushes=20, interval=1.0, tmp=None))
    ratio = page.ratio_main(argparse.Namespace(pairs=args.page_pairs, steps=args.page_steps, warmup=3, tmp=None))
    return {"load": load, "follow": follow, "ratio": ratio}


#: name -> (add its options, run it)
PARTS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "refresh": (add_refresh_options, bench_refresh),
    "page": (add_page_options, bench_page),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    for name, (add_options, _) in PARTS.items():
        p.add_argument(f"--{name}", action="store_true", help=f"run the {name} part")
        add_options(p)
    p.add_argument("--json", type=Path, help="write every part's figures to this file")
    args = p.parse_args(argv)
    chosen = [name for name in PARTS if getattr(args, name)] or list(PARTS)
    results = {name: PARTS[name][1](args) for name in chosen}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
