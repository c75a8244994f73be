"""SIGKILL at random moments leaves a readable store (docs/reliability.md). Every test kills a child process."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import check_flushed_prefix, crash_record, kill_writer_after

import spikestore

pytestmark = pytest.mark.slow


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
        store.append("output/a", crash_record(0))
    assert len(spikestore.open(path)["output/a"]) == len(a) + 1


STALE_END = textwrap.dedent("""
    import os, signal, struct, sys, numpy as np, spikestore
    from numcodecs.jenkins import jenkins_lookup3
    from spikestore.backends.hdf5._superblock import Superblock
    path = sys.argv[1]
    store = spikestore.Store(path, chunk_bytes=256)
    for i in range(30):
        store.set_step(i)
        store.append("output/a", (np.arange(50) % (i + 2) == 0).astype(np.float32))
    store.flush()
    before = Superblock.read(path)          # what the superblock says before the window
    backend = store._writer.backend         # (idle after flush)
    with backend._handle.lock, backend._structure() as f:
        for k in range(20):                 # "output" outgrows its header: new blocks past the old end
            f.create_group(f"output/extra{k}")
        f.flush()
        # HDF5 writes the superblock last: a kill just before it leaves the old end of allocation
        head = bytearray(before.head)
        head[11] = 0x01                     # open for write, not SWMR: a kill inside a window
        head[-4:] = struct.pack("<I", jenkins_lookup3(bytes(head[:-4]), 0))
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, bytes(head), 0)
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_hdf5_killed_in_a_window_before_its_superblock_keeps_every_record(tmp_path, monkeypatch):
    # Objects a window wrote lie past the end of allocation the superblock records, and an old
    # group header points at them: HDF5 refuses that ("addr overflow") unless the end is moved
    # up to the end of the file, as spikestore's recovered view and resume do.
    pytest.importorskip("h5py")
    from spikestore.backends.hdf5._superblock import Superblock

    monkeypatch.setattr("spikestore.backends.hdf5._handles.WINDOW_WAIT_S", 0.2)
    path = tmp_path / "stale.h5"
    script = tmp_path / "w.py"
    script.write_text(STALE_END)
    proc = subprocess.run([sys.executable, str(script), str(path)], check=False)
    assert proc.returncode == -signal.SIGKILL
    sb = Superblock.read(path)
    assert sb.flags == 0x01 and sb.eoa < path.stat().st_size

    run = spikestore.open(path)
    s = run["output/a"]
    assert len(s) == 30
    for i in range(30):
        np.testing.assert_array_equal(s[i], (np.arange(50) % (i + 2) == 0).astype(np.float32))
    run.close()
    with spikestore.Store(path, mode="a") as store:
        store.append("output/a", np.ones(50, np.float32))
    assert len(spikestore.open(path)["output/a"]) == 31
