"""``spikestore serve`` in a real browser: Debian's chromium driven by Playwright.

A writer (a Store in the test) appends while ``spikestore serve`` (a subprocess on a
free port of 127.0.0.1) follows it; the page must list the streams, follow new steps
without a reload, draw its plots from the store's data, and the server must stop
cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import spikestore

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install "
                               "playwright; the browser itself is Debian's chromium, never downloaded)")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("the browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
                allow_module_level=True)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STREAMS = ["output/fc1", "v_seq/fc1", "output/fc2", "grad_input/fc1"]
CALLS = 4  # records per step of the single-step streams (time steps within a step)
#: Longest the page may take to follow a flush in these tests: a deadline, not a measurement (see tools/bench_live.py).
DEADLINE_MS = 15_000


def _write_steps(store: spikestore.Store, steps: range, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Append ``steps`` to every stream; return the spikes of ``output/fc1`` written at each step."""
    spikes = {}
    for step in steps:
        store.set_step(step)
        per_call = []
        for _ in range(CALLS):
            s = (rng.random((6, 30)) < 0.15).astype(np.float32)
            per_call.append(s)
            store.append("output/fc1", s)
            store.append("v_seq/fc1", rng.normal(0.6, 0.3, (6, 30)).astype(np.float32))
            store.append("output/fc2", (rng.random((6, 10)) < 0.3).astype(np.float32))
        store.append("grad_input/fc1", np.float32(rng.random() + 0.1))
        spikes[step] = np.stack(per_call)
    store.flush()
    return spikes


def _start_server(path: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``spikestore serve PATH --port 0``; returns the process and the URL it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "spikestore.cli", "serve", str(path), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sel.select(timeout=deadline - time.monotonic()):
        line = proc.stdout.readline()
        found = re.search(r"http://\S+/", line)
        if found:
            return proc, found.group(0)
        if not line:
            break
    proc.kill()
    raise AssertionError(f"serve printed no URL: {proc.communicate()[1][-2000:]}")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A store being written (steps 0-4 flushed) and ``serve`` following it."""
    path = tmp_path_factory.mktemp("serve") / "run.zarr"
    rng = np.random.default_rng(7)
    store = spikestore.Store(path, mode="w")
    try:
        spikes = _write_steps(store, range(5), rng)
        proc, url = _start_server(path, "--interval", "0.3")
        try:
            yield {"store": store, "rng": rng, "url": url, "spikes": spikes, "proc": proc}
        finally:
            _stop(proc)
    finally:
        store.close()


def _step_cell(page: Any, key: str) -> Any:
    return page.locator(f'tr[data-stream="{key}"] .ss-step')


def test_lists_streams_and_follows_new_steps_without_reload(browser: Any, live: dict[str, Any]) -> None:
    page = browser.new_page()
    try:
        page.goto(live["url"])
        sync_api.expect(page.locator(".ss-key")).to_have_text(STREAMS, timeout=DEADLINE_MS)
        sync_api.expect(_step_cell(page, "output/fc1")).to_have_text("4", timeout=DEADLINE_MS)
        page.evaluate("() => { window.__same_page = true }")  # gone if the page reloads

        live["spikes"].update(_write_steps(live["store"], range(5, 9), live["rng"]))
        for key in STREAMS:
            sync_api.expect(_step_cell(page, key)).to_have_text("8", timeout=DEADLINE_MS)
        sync_api.expect(page.locator(".ss-latest")).to_have_text("8")
        assert page.evaluate("() => window.__same_page === true")
    finally:
        page.close()


def _drawn(page: Any) -> dict[str, Any]:
    """What the page's script says it drew: data points per plot, and the plots' titles."""
    return dict(page.evaluate("() => ({...window.spikestorePage.drawn, titles: window.spikestorePage.titles})"))


def test_plots_draw_the_stores_data(browser: Any, live: dict[str, Any], tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1340, "height": 1300})
    try:
        page.goto(live["url"])
        last = max(live["spikes"])
        sync_api.expect(_step_cell(page, "output/fc1")).to_have_text(str(last), timeout=DEADLINE_MS)
        page.wait_for_function("() => window.spikestorePage.version > 0", timeout=DEADLINE_MS)
        drawn = _drawn(page)
        assert all(drawn[name] for name in ("rates", "grads", "raster", "heat")), drawn
        # The raster shows every spike of output/fc1's latest step, one tick each (its records have no batch
        # axis: the page draws their values flattened as neurons, one call per time step).
        expected = int(np.count_nonzero(live["spikes"][last]))
        assert drawn["raster"] == expected
        title = drawn["titles"]["raster"]
        assert f"step {last}" in title and f"({expected} spikes)" in title, title
        # The voltage traces (the first 8 neurons) mark the spikes of the same layer's output at the same step.
        spikes_shown = int(np.count_nonzero(live["spikes"][last].reshape(CALLS, -1)[:, :8]))
        assert "spikes from output/fc1" in drawn["titles"]["voltage"], drawn["titles"]
        assert drawn["voltage"] == {"traces": 8, "marks": spikes_shown}, drawn
        assert page.locator("canvas").count() >= 5

        # Choosing other neurons on the page redraws the raster with exactly their spikes.
        page.fill("#n0", "10")
        page.fill("#n1", "19")
        page.press("#n1", "Enter")
        window = int(np.count_nonzero(live["spikes"][last].reshape(CALLS, -1)[:, 10:20]))
        page.wait_for_function(f"() => window.spikestorePage.drawn.raster === {window}", timeout=DEADLINE_MS)
        page.fill("#n0", "")
        page.fill("#n1", "")
        page.press("#n1", "Enter")
        page.wait_for_function(f"() => window.spikestorePage.drawn.raster === {expected}", timeout=DEADLINE_MS)

        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot))
        from PIL import Image

        pixels = np.asarray(Image.open(shot).convert("RGB"))
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        assert len(colours) > 50, f"screenshot {shot} looks blank ({len(colours)} colours)"
    finally:
        page.close()


def test_view_is_json_and_refuses_bad_choices(live: dict[str, Any]) -> None:
    import json
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(live["url"] + "view", timeout=30) as reply:
        view = json.load(reply)
    assert [s["key"] for s in view["streams"]] == STREAMS
    assert view["spikes"] == "output/fc1" and view["voltage"] == "v_seq/fc1"
    assert view["latest"] == max(live["spikes"])
    # a tab that has the latest version gets only that back
    with urllib.request.urlopen(f"{live['url']}view?since={view['version']}", timeout=30) as reply:
        assert json.load(reply) == {"version": view["version"]}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(live["url"] + "view?sample=x", timeout=30)
    assert refused.value.code == 400
    assert json.load(refused.value) == {"error": "sample='x': expected a whole number"}


def test_sigterm_stops_cleanly_and_releases_the_port(tmp_path: Path) -> None:
    path = tmp_path / "done.zarr"
    with spikestore.Store(path, mode="w") as store:
        _write_steps(store, range(2), np.random.default_rng(1))
    proc, url = _start_server(path)
    port = int(re.search(r":(\d+)/", url).group(1))  # type: ignore[union-attr]
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.status == 200 and b"spikestore serve" in reply.read()
    assert _stop(proc) == 0
    out, _ = proc.communicate()
    assert "stopped" in out
    with socket.socket() as s:  # a new server can listen on the port (as servers do, past TIME_WAIT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_other_host_warns_that_anyone_can_read_the_store(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from spikestore.cli import main

    (tmp_path / "notes.txt").write_text("not a store")
    done = CliRunner().invoke(main, ["serve", str(tmp_path), "--host", "192.0.2.1"])
    assert done.exit_code == 1  # the folder is no store, as `spikestore info` says of it
    assert "anyone who can reach this host" in done.stderr
    assert f"{tmp_path} is not a store" in done.stderr
    missing = CliRunner().invoke(main, ["serve", str(tmp_path / "missing.zarr")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr  # a usage error, as for every command


def test_heat_map_stays_bounded_and_merges_neighbours() -> None:
    """The per-neuron heat map of a long run: at most HEAT_COLUMNS steps, each merge the mean of two neighbours."""
    from spikestore.live._serve_data import HEAT_COLUMNS, HEAT_NEURONS, _HeatRing  # no public path to the ring

    rng = np.random.default_rng(3)
    columns = rng.random((1000, 2 * HEAT_NEURONS + 2))
    ring = _HeatRing(columns.shape[1])
    for step, column in enumerate(columns):
        ring.add(step, column)
    heat = ring.view()
    assert heat.rates.shape[1] == len(heat.steps) <= HEAT_COLUMNS
    assert heat.group == 3 and heat.rates.shape[0] == 172  # 514 neurons: 171 rows of 3, one of 1
    assert np.all(np.diff(heat.steps) > 0) and heat.steps[-1] == 999
    # the 3 neurons of a row averaged (the last row holds the leftover neurons), then neighbouring steps
    # merged pairwise: a column covers the steps since the previous one, each weighted alike
    pooled = np.stack([np.concatenate([c[:-1].reshape(-1, 3).mean(1), c[-1:]])
                       for c in columns], axis=1)
    first = heat.steps[0]
    np.testing.assert_allclose(heat.rates[:, 0], pooled[:, :first + 1].mean(axis=1))
