#!/usr/bin/env python
"""Figures of ``spikestore serve`` (docs/live.md, "Measured"): page load time and the page's cost to training.

``load``
    Writes a run of ``--records`` records (four streams: two spike layers, a
    voltage, a gradient norm), starts ``spikestore serve`` on it, and loads the
    page ``--loads`` times in Debian's chromium (Playwright), each in a new
    tab: the time from the request until the page has drawn every plot with data
    (its document idle, every plot's sources non-empty), in a fresh browser
    context (empty cache) and in new tabs of one context (its scripts cached). Prints the server's
    start time (its first refresh reads the whole run) and its RSS after the loads.
``follow``
    A writer in this process appends one step to a store and flushes it,
    ``--flushes`` times at irregular moments, while a tab shows the page of
    ``spikestore serve --interval`` on it: the time from the end of each
    flush until the page shows that step as the latest (by design at most
    about 1.5 intervals: the server refreshes every interval, the page asks
    every half interval).
``screenshot``
    Saves the page of a store (``runs/demo.zarr``: ``bash tools/demo.sh``) as a
    PNG, once its plots are drawn (docs/images/serve.png).
``ratio``
    The reference workload (tools/workload.py, run by tools/workload_worker.py
    as tools/bench_workload.py does) recorded by spikestore, in alternated
    pairs: one run with no page, one with ``spikestore serve`` following its
    store and a tab showing the page. The page opens once the store exists (at
    the start of the timed steps) and the server has started, so it is open for
    the fraction of the timed phase that is printed.

Examples
--------
::

    python tools/bench_live_page.py load --records 100000 --loads 7
    python tools/bench_live_page.py ratio --pairs 7 --steps 40
    python tools/bench_live_page.py follow --flushes 20 --interval 1
    python tools/bench_live_page.py screenshot runs/demo.zarr docs/images/serve.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "workload_worker.py"
CHROMIUM = "/usr/bin/chromium"
#: True once the page has drawn its first view and every plot has data (spikestore/live/static/page.js).
READY = """() => {
    const page = window.spikestorePage;
    return Boolean(page && page.version > 0 && page.drawn.rates && page.drawn.grads && page.drawn.raster
                   && page.drawn.heat && page.drawn.voltage && page.drawn.voltage.traces);
}"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE),
                                                         *filter(None, [os.environ.get("PYTHONPATH")])])}


def write_run(path: Path, records: int) -> None:
    """A finished run of ``records`` records over four streams, one record of each per step."""
    import spikestore

    rng = np.random.default_rng(0)
    pool = {"output/fc1": (rng.random((16, 8, 128)) < 0.1).astype(np.float32),
            "output/fc2": (rng.random((16, 8, 64)) < 0.2).astype(np.float32),
            "v_seq/fc1": rng.normal(0.5, 0.3, (16, 8, 32)).astype(np.float32)}
    with spikestore.Store(path, mode="w", overwrite=True) as store:
        for step in range(records // 4):
            store.set_step(step)
            for key, values in pool.items():
                store.append(key, values[step % 16])
            store.append("grad_input/fc1", np.float32(1.0 + 0.1 * np.sin(step / 50)))


def start_server(path: Path, *extra: str) -> tuple[subprocess.Popen[str], str, float]:
    """``spikestore serve PATH --port 0``: the process, its URL and the seconds until it printed it."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "spikestore.cli", "serve", str(path), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while sel.select(timeout=600):
        line = proc.stdout.readline()
        found = re.search(r"http://\S+/", line)
        if found:
            return proc, found.group(0), time.perf_counter() - t0
        if not line:
            break
    proc.kill()
    raise RuntimeError(f"serve printed no URL: {proc.communicate()[1][-2000:]}")


def stop_server(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_main(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "run.zarr"
        t0 = time.perf_counter()
        write_run(path, args.records)
        print(f"wrote {args.records} records in {time.perf_counter() - t0:.1f} s", flush=True)
        proc, url, started = start_server(path)
        times: dict[str, list[float]] = {"fresh": [], "cached": []}
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                cached = browser.new_context(viewport={"width": 1300, "height": 1200})
                for i in range(args.loads + 1):  # the first load of each kind warms up: not counted
                    for kind in times:
                        # "fresh": a new browser context (empty cache), as a first visit; "cached": new tabs of
                        # one context, as a user who opens the page again (the page's scripts from the browser's cache)
                        context = browser.new_context(viewport={"width": 1300, "height": 1200}) \
                            if kind == "fresh" else cached
                        page = context.new_page()
                        t = time.perf_counter()
                        page.goto(url, wait_until="commit")
                        page.wait_for_function(READY, timeout=60_000)
                        seconds = time.perf_counter() - t
                        page.close()
                        if kind == "fresh":
                            context.close()
                        if i:
                            times[kind].append(seconds)
                        print(f"load {i} {kind}{' (warm-up)' if not i else ''}: {seconds * 1e3:.0f} ms", flush=True)
                browser.close()
            rss = rss_mib(proc.pid)
        finally:
            rc = stop_server(proc)
    out: dict[str, Any] = {"records": args.records, "server_start_s": started, "server_rss_mib": rss,
                           "server_exit": rc}
    for kind, got in times.items():
        out[f"load_ms_{kind}"] = [round(t * 1e3, 1) for t in got]
        out[f"load_ms_{kind}_median"] = statistics.median(got) * 1e3
        print(f"page load ({kind}), {args.records} records: median {statistics.median(got) * 1e3:.0f} ms over "
              f"{len(got)} loads (range {min(got) * 1e3:.0f}-{max(got) * 1e3:.0f})", flush=True)
    print(f"server start {started:.1f} s, RSS {rss:.0f} MiB, exit {rc}", flush=True)
    return out


@contextlib.contextmanager
def drawn_page(url: str, height: int = 1200) -> Iterator[Any]:
    """A chromium tab showing ``url`` once the page has drawn every plot (:data:`READY`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1340, "height": height})
            page.goto(url)
            page.wait_for_function(READY, timeout=60_000)
            yield page
        finally:
            browser.close()


def follow_main(args: argparse.Namespace) -> dict[str, Any]:
    import spikestore

    rng = np.random.default_rng(2)
    delays: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "run.zarr"
        store = spikestore.Store(path, mode="w")
        try:
            def write(step: int) -> float:
                store.set_step(step)
                store.append("output/fc1", (rng.random((16, 8, 128)) < 0.1).astype(np.float32))
                store.append("v_seq/fc1", rng.normal(0.5, 0.3, (16, 8, 32)).astype(np.float32))
                store.append("grad_input/fc1", np.float32(1.0))
                store.flush()
                return time.perf_counter()

            write(0)
            proc, url, _ = start_server(path, "--interval", str(args.interval))
            try:
                with drawn_page(url) as page:
                    for step in range(1, args.flushes + 1):
                        time.sleep(float(rng.uniform(0.2, 1.5)))  # flushes fall anywhere in the refresh cycle
                        flushed = write(step)
                        page.wait_for_function(
                            f"() => document.querySelector('.ss-latest').textContent === '{step}'",
                            polling="raf", timeout=60_000)
                        delays.append(time.perf_counter() - flushed)
                        print(f"step {step}: shown {delays[-1] * 1e3:.0f} ms after its flush", flush=True)
            finally:
                rc = stop_server(proc)
        finally:
            store.close()
    median = statistics.median(delays)
    print(f"flush to page, --interval {args.interval:g}: median {median * 1e3:.0f} ms, max {max(delays) * 1e3:.0f} ms "
          f"over {len(delays)} flushes; server exit {rc}", flush=True)
    return {"interval_s": args.interval, "delays_ms": [round(d * 1e3, 1) for d in delays],
            "median_ms": median * 1e3, "max_ms": max(delays) * 1e3}


def screenshot_main(args: argparse.Namespace) -> dict[str, Any]:

    proc, url, _ = start_server(Path(args.store))
    try:
        with drawn_page(url, height=1000) as page:
            page.screenshot(path=args.out, full_page=True)
    finally:
        stop_server(proc)
    print(f"wrote {args.out}")
    return {"out": args.out}


def _worker(cfg: dict[str, Any], out_dir: Path, page: bool) -> dict[str, Any]:
    """One spikestore run of the reference workload; with ``page``, followed by serve and a browser tab."""
    res_file = out_dir / "stores" / f"result-spikestore-{cfg['tag']}.json"
    res_file.parent.mkdir(parents=True, exist_ok=True)
    cfg = {**cfg, "result_file": str(res_file)}
    store = out_dir / "stores" / f"spikestore-{cfg['tag']}.zarr"
    worker = subprocess.Popen([sys.executable, str(WORKER), json.dumps(cfg)], env=_env(), cwd=str(REPO),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    opened, server, server_cpu = None, None, 0.0
    if page:
        from playwright.sync_api import sync_playwright

        while not (store / "zarr.json").exists() and worker.poll() is None:
            time.sleep(0.05)  # polling for the worker's store to appear (no event to wait on across processes)
        try:
            server, url, _ = start_server(store)
        except RuntimeError:
            if worker.wait() != 0:
                raise
            server = None  # the run ended (and removed its store) before the server was up: no page open
    if page and server is not None:
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                tab = browser.new_page(viewport={"width": 1300, "height": 1200})
                tab.goto(url)
                opened = time.perf_counter()
                while worker.poll() is None:
                    tab.wait_for_timeout(200)  # keep the tab's event loop running while the page follows the run
                browser.close()
            server_cpu = cpu_seconds(server.pid)
        finally:
            stop_server(server)
    _, err = worker.communicate()
    ended = time.perf_counter()
    if worker.returncode != 0 or not res_file.exists():
        raise RuntimeError(f"worker {cfg['tag']} failed (exit {worker.returncode}):\n{err[-3000:]}")
    res: dict[str, Any] = json.loads(res_file.read_text())
    res_file.unlink()
    if page:
        res["page_open_fraction"] = 0.0 if opened is None else min(1.0, (ended - opened) / res["wall_s"])
        res["server_cpu_s"] = server_cpu
    return res


def ratio_main(args: argparse.Namespace) -> dict[str, Any]:
    out_dir = Path(tempfile.mkdtemp(dir=args.tmp))
    base = {"steps": args.steps, "warmup": args.warmup, "seed": 0, "threads": None, "out_dir": str(out_dir),
            "backend": "zarr", "keep_stores": False, "variant": "spikestore", "spikestore_src": None}
    pairs = []
    for k in range(args.pairs):
        order = (False, True) if k % 2 == 0 else (True, False)
        got = {}
        for page in order:
            r = _worker({**base, "tag": f"p{k}-{'page' if page else 'nopage'}"}, out_dir, page)
            got[page] = r
            extra = (f", page open {r['page_open_fraction']:.0%} of it, server CPU {r['server_cpu_s']:.1f} s"
                     if page else "")
            print(f"[pair {k}] {'page' if page else 'no page':<8} {r['ms_per_step']:7.1f} ms/step{extra}", flush=True)
        pairs.append({"no_page_ms": got[False]["ms_per_step"], "page_ms": got[True]["ms_per_step"],
                      "ratio": got[True]["ms_per_step"] / got[False]["ms_per_step"],
                      "page_open_fraction": got[True]["page_open_fraction"]})
    shutil.rmtree(out_dir, ignore_errors=True)
    ratios = [p["ratio"] for p in pairs]
    out = {"steps": args.steps, "pairs": pairs, "ratio_median": statistics.median(ratios),
           "ratio_range": [min(ratios), max(ratios)],
           "no_page_ms_median": statistics.median(p["no_page_ms"] for p in pairs),
           "page_ms_median": statistics.median(p["page_ms"] for p in pairs)}
    print(f"reference workload recorded by spikestore, {args.pairs} alternated pairs of {args.steps} steps: "
          f"{out['page_ms_median']:.1f} ms/step with a page open, {out['no_page_ms_median']:.1f} without; "
          f"ratio page/no page median {out['ratio_median']:.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    load = sub.add_parser("load", help="page load time for a long run")
    load.add_argument("--records", type=int, default=100_000)
    load.add_argument("--loads", type=int, default=7)
    ratio = sub.add_parser("ratio", help="the reference workload's step time with and without a page open")
    ratio.add_argument("--pairs", type=int, default=7)
    ratio.add_argument("--steps", type=int, default=40)
    ratio.add_argument("--warmup", type=int, default=3)
    follow = sub.add_parser("follow", help="time from a flush until the page shows the step")
    follow.add_argument("--flushes", type=int, default=20)
    follow.add_argument("--interval", type=float, default=1.0, help="spikestore serve --interval")
    shot = sub.add_parser("screenshot", help="a PNG of the page of a store")
    shot.add_argument("store")
    shot.add_argument("out")
    for p in (load, ratio, follow):
        p.add_argument("--tmp", default=None, help="folder for the stores (default: the system's temp folder)")
        p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    out = {"load": load_main, "ratio": ratio_main, "follow": follow_main,
           "screenshot": screenshot_main}[args.what](args)
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
