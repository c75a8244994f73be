"""``spikestore watch``: the plain-text snapshot against the reader, and the terminal view under a pseudo-terminal
while a writer in this process appends to the store."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import record_as_ranks

import spikestore
from spikestore.cli import main
from spikestore.live import Follower, Snapshot, StreamSummary
from spikestore.live.watch import render_snapshot

ROOT = Path(__file__).resolve().parent.parent
NEURONS = 16
#: Steps of the live test: eight digits, which no pid, size or duration on the screen shows.
FIRST, LATER = 31_415_926, 42_424_242


def spikes(step: int) -> np.ndarray:
    """A (4, NEURONS) spike record: neuron 0 always fires, the last never does, the others at random."""
    rng = np.random.default_rng(step)
    record = (rng.random((4, NEURONS)) < 0.5).astype(np.float32)
    record[:, 0], record[:, -1] = 1, 0
    return record


def voltage(step: int) -> np.ndarray:
    return np.random.default_rng(1000 + step).normal(step, 1.0, (4, NEURONS)).astype(np.float32)


def append_step(store: spikestore.Store, step: int, layer: str = "fc") -> None:
    store.set_step(step)
    store.append(f"output/{layer}", spikes(step))
    store.append(f"v/{layer}", voltage(step))


@pytest.fixture()
def recorded(tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    with spikestore.Store(path, chunk_bytes=256) as store:
        for step in range(10):
            append_step(store, step)
    return path


def rows(text: str) -> dict[str, list[str]]:
    """The stream table of a snapshot: stream key -> its cells (cells are two or more spaces apart)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stream "))
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in lines[start + 2:])}


def test_once_matches_the_reader_and_the_engine(recorded: Path) -> None:
    result = CliRunner().invoke(main, ["watch", str(recorded), "--once"])
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert list(table) == ["output/fc", "v/fc"]
    with spikestore.open(recorded) as run, Follower(run) as follower:
        snap = follower.refresh()
        for key, cells in table.items():
            stream = run[key]
            assert cells[1] == str(len(stream)) == str(snap.streams[key].records)
            assert cells[2] == str(int(stream.steps[-1])) == str(snap.streams[key].last_step) == "9"
    # the latest rate / mean, from the records themselves
    last = np.stack([spikes(9)])
    assert table["output/fc"][3] == f"{last.mean():.3f}"
    v = voltage(9)
    assert table["v/fc"][3] == f"{v.mean():.3g} ± {v.std():.2g}"
    # one neuron of 16 never fires, one always does; a float stream has neither
    assert table["output/fc"][5:7] == ["6%", "6%"]
    assert table["v/fc"][5:7] == ["-", "-"]
    assert "writer   closed" in result.output
    # the mean of v/fc grows with the step (its records are drawn around the step): one bar per step, rising
    history = table["v/fc"][4]
    assert len(history) == 10 and history[0] == "▁" and history[-1] == "█"
    assert list(history) == sorted(history)


def test_a_terminal_without_unicode_gets_ascii(recorded: Path) -> None:
    result = CliRunner(charset="ascii").invoke(main, ["watch", str(recorded), "--once"])
    assert result.exit_code == 0, result.output
    history = rows(result.output)["v/fc"][4]
    assert history.isascii() and len(history) == 10 and history[0] == "_" and history[-1] == "#"


def summary(key: str, records: int, last_step: int) -> StreamSummary:
    steps = np.arange(last_step + 1 - records, last_step + 1)
    return StreamSummary(key=key, binary=False, records=records, last_step=last_step, ranks=(0,), steps=steps,
                         rate=None, mean=steps.astype(float), std=np.zeros(records), neurons=1, neuron_rates=None,
                         dead_fraction=None, saturated_fraction=None, bytes_on_disk=3 * 1024 ** 2,
                         bits_per_spike=None, records_per_second=12.5)


def test_snapshot_shows_failures_drops_and_ranks() -> None:
    """A failed stream says why in its row and above the table; drops and each rank's writer are counted."""
    writers = {0: {"status": "open", "pid": 11, "host": "node0", "modified": 1},
               1: {"status": "failed", "pid": 12, "host": "node1", "modified": 2}}
    snap = Snapshot(path="s3://bucket/run.zarr", time=0.0, writer=writers[0], failed={"v/fc": "disk full at step 4"},
                    streams={"grad/fc": summary("grad/fc", 5, 4), "v/fc": summary("v/fc", 3, 2)},
                    refresh_seconds=0.25, new_records=8, writers=writers, dropped=7)
    text = render_snapshot(snap)
    table = rows(text)
    assert table["v/fc"][-1] == "FAILED: disk full at step 4" and table["grad/fc"][-1] == "values"
    assert table["grad/fc"][1:4] == ["5", "4", "4"] and table["grad/fc"][7:9] == ["3.0 MiB", "12.5"]
    assert "dropped  7 records (queue full), 3 (changed in place)" in text
    assert "ranks    0 open, 1 failed" in text and "failed   v/fc: disk full at step 4" in text
    assert "refresh  8 new records in 250 ms" in text


def test_a_run_of_two_ranks_shows_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank r records steps 0..4 + r: the row counts both ranks' records, its last step is the latest of either,
    and each rank's writer status is listed."""
    path = tmp_path / "ranks.zarr"

    def record(store: spikestore.Store, rank: int) -> None:
        for step in range(5 + rank):
            append_step(store, step)

    record_as_ranks(path, monkeypatch, record, chunk_bytes=256)
    result = CliRunner().invoke(main, ["watch", str(path), "--once"])
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table["output/fc"][1:3] == ["11", "5"] and table["v/fc"][1:3] == ["11", "5"]
    assert "ranks    0 closed, 1 closed" in result.output


def test_without_a_terminal_it_prints_one_snapshot(recorded: Path) -> None:
    """stdout is not a terminal under CliRunner: the same snapshot as --once, and exit 0."""
    plain = CliRunner().invoke(main, ["watch", str(recorded)])
    once = CliRunner().invoke(main, ["watch", str(recorded), "--once"])
    assert plain.exit_code == 0, plain.output
    assert rows(plain.output) == rows(once.output)


def test_a_path_that_is_not_a_store_fails_as_info_does(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a store")
    runner = CliRunner()
    watched = runner.invoke(main, ["watch", str(tmp_path), "--once"])
    info = runner.invoke(main, ["info", str(tmp_path)])
    assert watched.exit_code == info.exit_code == 1
    assert watched.output == info.output and watched.output.startswith("spikestore: ")


def test_interval_is_at_most_two_seconds(recorded: Path) -> None:
    result = CliRunner().invoke(main, ["watch", str(recorded), "--interval", "5"])
    assert result.exit_code == 2 and "--interval" in result.output


@pytest.mark.slow
def test_terminal_view_follows_a_live_writer(tmp_path: Path) -> None:
    """Under a pseudo-terminal: the view shows the streams, then a step committed after it started, opens a
    stream's neurons on Enter, and quits on q with status 0. The layer's name reads as markup to rich; it must
    show as it is."""
    pexpect = pytest.importorskip("pexpect")
    path = tmp_path / "live.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    with spikestore.Store(path, chunk_bytes=256) as store:
        for step in range(FIRST, FIRST + 4):
            append_step(store, step, layer="net[bold]")
        store.flush()
        child = pexpect.spawn(sys.executable, ["-m", "spikestore.cli", "watch", str(path), "--interval", "0.2"],
                              env=env, dimensions=(30, 150), encoding="utf-8", timeout=30)
        try:
            child.expect(re.escape("output/net[bold]"))
            child.expect(str(FIRST + 3))  # the last step committed before the view started
            append_step(store, LATER, layer="net[bold]")
            store.flush()
            child.expect(str(LATER))  # followed without a restart
            child.send("\r")
            # neuron 0 fires at every time point, the last one never
            child.expect(r"most active +#0 1\b")
            child.expect(rf"least active +#{NEURONS - 1} 0\b")
            child.send("q")
            child.expect(pexpect.EOF, timeout=15)
        finally:
            child.close(force=True)
    assert child.exitstatus == 0, child.before


@pytest.mark.slow
def test_a_dumb_terminal_gets_the_snapshot(recorded: Path) -> None:
    """A terminal that cannot draw the view (TERM=dumb) gets the plain snapshot, and exit 0."""
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}
    output, status = pexpect.run(f"{sys.executable} -m spikestore.cli watch {recorded}", env=env, timeout=60,
                                 withexitstatus=True, encoding="utf-8")
    assert status == 0, output
    assert list(rows(output.replace("\r\n", "\n"))) == ["output/fc", "v/fc"]
