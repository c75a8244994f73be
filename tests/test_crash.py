"""SIGKILL at random moments leaves a readable store (DESIGN §4, §7)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import spikestore

WRITER = textwrap.dedent("""
    import sys, numpy as np, spikestore
    path = sys.argv[1]
    def record(i):
        rng = np.random.default_rng(i)
        if i % 3 == 2:
            return rng.standard_normal((4, 7)).astype(np.float32)
        shape = (3, 50) if i % 7 else (2, 50)   # shape changes open segments
        return (rng.random(shape) < 0.1).astype(np.float32)
    store = spikestore.Store(path, chunk_bytes=700, flush_interval=0.05)
    store.append("output/a", record(0)); store.flush()   # warm up imports
    print(0, flush=True)
    i = 1
    while True:
        store.set_step(i)
        store.append("output/a" if i % 3 != 2 else "v/a", record(i))
        i += 1
        if i % 25 == 0:
            store.flush()
            print(i, flush=True)
""")


def expected(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    if i % 3 == 2:
        return rng.standard_normal((4, 7)).astype(np.float32)
    shape = (3, 50) if i % 7 else (2, 50)
    return (rng.random(shape) < 0.1).astype(np.float32)


def kill_writer_after(path: Path, seconds: float) -> int:
    """Run :data:`WRITER` on ``path``, SIGKILL it ``seconds`` after it is up;
    return how many records it reported flushed."""
    script = path.parent / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
    # Raw reads of the pipe: a non-blocking text stream may hand out half a line.
    fd = proc.stdout.fileno()
    flushed = -1
    pending = b""

    def read_lines() -> None:
        nonlocal pending, flushed
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                return
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                flushed = int(line)

    os.set_blocking(fd, False)
    started = time.monotonic()
    while flushed < 0:  # the child is up and has written
        if time.monotonic() - started > 300:
            proc.kill()
            raise RuntimeError("the writer did not report its first flush within 300 s")
        if proc.poll() is not None:
            read_lines()
            raise RuntimeError(f"the writer exited with {proc.returncode} before its first flush")
        read_lines()
        time.sleep(0.005)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        read_lines()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    read_lines()
    return flushed


def check_flushed_prefix(run: spikestore.Run, flushed: int) -> tuple[spikestore.Stream, int]:
    """Check a store that :data:`WRITER` wrote until killed, after ``flushed`` records.

    Every flushed record must be there, each stream must hold a gap-free
    prefix of what was written, and every visible record must be bit-exact.
    Returns the ``output/a`` stream and the last step on disk.
    """
    a = run["output/a"]
    # "v/a" starts at step 2: a child killed before its first flush after that
    # (a slow machine) may not have committed the stream at all.
    want_v = sum(1 for i in range(flushed) if i % 3 == 2)
    v = run["v/a"] if want_v or "v/a" in run.streams else None
    n_v = 0 if v is None else len(v)
    assert len(a) >= sum(1 for i in range(flushed) if i % 3 != 2)
    assert n_v >= want_v
    horizon = 3 * (len(a) + n_v) + 3
    assert a.steps.tolist() == [i for i in range(horizon) if i % 3 != 2][: len(a)]
    if v is not None:
        assert v.steps.tolist() == [i for i in range(horizon) if i % 3 == 2][: n_v]
    for s in (a, v):
        for j, step in enumerate([] if s is None else s.steps):
            np.testing.assert_array_equal(s[j], expected(int(step)))
    return a, max(int(a.steps[-1]), int(v.steps[-1]) if n_v else -1)


@pytest.mark.parametrize("trial", range(6))
def test_sigkill_leaves_every_flushed_record_bit_exact(tmp_path, trial):
    path = tmp_path / "crash.zarr"
    random.seed(trial)
    flushed = kill_writer_after(path, 0.05 + random.random() * 1.5)

    run = spikestore.open(path)
    assert run.writer["status"] == "open"  # it never closed
    a, last = check_flushed_prefix(run, flushed)

    # A crashed store can be resumed: append continues after the last step.
    with spikestore.Store(path, mode="a") as store:
        assert store.step == last + 1
        store.append("output/a", expected(0))
    assert len(spikestore.open(path)["output/a"]) == len(a) + 1
