"""SIGKILL at random moments leaves a readable store (DESIGN §4, §7)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

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


@pytest.mark.parametrize("trial", range(6))
def test_sigkill_leaves_every_flushed_record_bit_exact(tmp_path, trial):
    path = tmp_path / "crash.zarr"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    random.seed(trial)
    flushed = int(proc.stdout.readline())  # the child is up and has written
    deadline = time.monotonic() + 0.05 + random.random() * 1.5
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            flushed = int(line)
        else:
            time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for line in proc.stdout.read().split():
        flushed = int(line)

    run = spikestore.open(path)
    assert run.writer["status"] == "open"  # it never closed
    a, v = run["output/a"], run["v/a"]
    # Every record flushed before the kill is there...
    assert len(a) >= sum(1 for i in range(flushed) if i % 3 != 2)
    assert len(v) >= sum(1 for i in range(flushed) if i % 3 == 2)
    # ...each stream holds a gap-free prefix of what was written...
    horizon = 3 * (len(a) + len(v)) + 3
    assert a.steps.tolist() == [i for i in range(horizon) if i % 3 != 2][: len(a)]
    assert v.steps.tolist() == [i for i in range(horizon) if i % 3 == 2][: len(v)]
    # ...and every visible record is bit-exact.
    for s in (a, v):
        for j, step in enumerate(s.steps):
            np.testing.assert_array_equal(s[j], expected(int(step)))

    # A crashed store can be resumed: append continues after the last step.
    with spikestore.Store(path, mode="a") as store:
        assert store.step == max(a.steps[-1], v.steps[-1]) + 1
        store.append("output/a", expected(0))
    assert len(spikestore.open(path)["output/a"]) == len(a) + 1
