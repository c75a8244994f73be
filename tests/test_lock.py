"""One writer per store, enforced by an operating-system lock (docs/reliability.md).

Each case was a way to lose data before the lock: a second writer in the same
process or another one, ``overwrite=True`` on a store being written, and two
processes creating one store at the same moment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import spikestore
from spikestore import StoreExistsError, StoreInUseError

HOLDER = f"process {os.getpid()} on {socket.gethostname()}"


def _records(path) -> list[list[float]]:
    return [r.tolist() for r in spikestore.open(path)["output/a"]]


@pytest.mark.parametrize("mode,overwrite", [("a", False), ("w", True), ("w", False)])
def test_a_second_writer_in_this_process_is_refused_and_the_first_is_untouched(store_path, mode, overwrite):
    with spikestore.Store(store_path) as first:
        first.append("output/a", np.ones(3))
        first.flush()
        with pytest.raises(StoreInUseError, match=HOLDER) as info:
            spikestore.Store(store_path, mode=mode, overwrite=overwrite)
        assert "spikestore.open" in str(info.value)  # says how to read meanwhile
        assert _records(store_path) == [[1.0, 1.0, 1.0]]  # nothing deleted, still readable
        first.set_step(1)
        first.append("output/a", np.zeros(3))
    assert _records(store_path) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert spikestore.open(store_path).writer["status"] == "closed"
    assert not store_path.with_name(store_path.name + ".lock").exists()  # removed at close
    with spikestore.Store(store_path, mode="a") as again:  # free once closed
        again.append("output/a", np.full(3, 2.0))
    assert len(_records(store_path)) == 3


def test_a_store_that_failed_to_open_leaves_the_path_free(store_path):
    with spikestore.Store(store_path) as store:
        store.append("output/a", np.ones(3))
    with pytest.raises(StoreExistsError):
        spikestore.Store(store_path)  # refused: not empty, no overwrite
    with spikestore.Store(store_path, mode="a") as store:  # the refused writer released the lock
        store.append("output/a", np.ones(3))


_OTHER = textwrap.dedent("""
    import sys, numpy as np, spikestore
    try:
        with spikestore.Store(sys.argv[1], mode="w", overwrite=True) as store:
            store.append("output/a", np.full(3, 7.0))
    except spikestore.StoreInUseError as exc:
        print("in use:", exc)
""")


def test_overwrite_from_another_process_never_deletes_a_live_store(store_path):
    with spikestore.Store(store_path) as first:
        first.append("output/a", np.ones(3))
        first.flush()
        out = subprocess.run([sys.executable, "-c", _OTHER, str(store_path)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("in use:") and HOLDER in out.stdout
        first.set_step(1)
        first.append("output/a", np.zeros(3))
    assert _records(store_path) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


_RACER = textwrap.dedent("""
    import os, sys, time, numpy as np, spikestore
    path, me, go = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    while time.time() < go:
        pass
    try:
        store = spikestore.Store(path, mode="w")
    except (spikestore.StoreInUseError, spikestore.StoreExistsError) as exc:
        print("refused", type(exc).__name__, flush=True)
        sys.exit(0)
    store.append("output/a", np.full(3, me))
    time.sleep(0.3)  # hold it open a while (a later rival meets a live writer, or a store: refused either way)
    store.close()
    print("wrote", flush=True)
""")


@pytest.mark.parametrize("trial", range(3))
def test_two_processes_creating_one_store_at_once_give_one_writer(store_path, trial):
    import spikestore.codecs._packing as packing

    packing.load_kernels()  # (warm numba's cache, so both children start as fast)
    go = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(store_path), str(me), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in (1.0, 2.0)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    said = sorted(o[0].split()[0] for o in outs)
    assert said == ["refused", "wrote"], outs
    winner = 1.0 if outs[0][0].startswith("wrote") else 2.0
    assert _records(store_path) == [[winner] * 3]  # the winner's record, whole and alone
    assert spikestore.open(store_path).writer["status"] == "closed"


def test_appending_after_a_killed_writer_needs_no_guess(store_path):
    code = textwrap.dedent("""
        import sys, numpy as np, spikestore
        store = spikestore.Store(sys.argv[1])
        store.append("output/a", np.ones(3)); store.flush()
        print("flushed", flush=True)
        sys.stdin.read()  # wait to be killed
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(store_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "flushed"
    with pytest.raises(StoreInUseError, match=f"process {proc.pid} on "):
        spikestore.Store(store_path, mode="a")  # alive: refused
    proc.kill()
    proc.wait()
    with spikestore.Store(store_path, mode="a") as store:  # dead: the kernel dropped its lock
        store.append("output/a", np.zeros(3))
    assert _records(store_path) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_a_symlink_to_a_live_store_shares_its_lock(tmp_path):
    path = tmp_path / "run.zarr"
    link = tmp_path / "link.zarr"
    with spikestore.Store(path) as store:
        store.append("output/a", np.ones(3))
        store.flush()
        link.symlink_to(path)
        with pytest.raises(StoreInUseError):
            spikestore.Store(link, mode="a")
    assert _records(path) == [[1.0, 1.0, 1.0]]


def test_a_forked_child_leaves_its_parents_store_and_lock_alone(store_path):
    import multiprocessing as mp

    with spikestore.Store(store_path) as store:
        store.append("output/a", np.ones(3))
        store.flush()
        child = mp.get_context("fork").Process(target=int)  # exits at once, running its exit hooks
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert store_path.with_name(store_path.name + ".lock").exists()
        assert spikestore.open(store_path).writer["status"] == "open"  # the child did not close it
        with pytest.raises(StoreInUseError):
            spikestore.Store(store_path, mode="a")
        store.set_step(1)
        store.append("output/a", np.zeros(3))
    assert _records(store_path) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_a_close_interrupted_while_the_writer_drains_keeps_the_store_and_its_lock(store_path, monkeypatch):
    from spikestore._write.writer import Writer

    real_wait = Writer._wait
    calls = {"n": 0}

    def wait(self, event, timeout):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # Ctrl-C while close() waits
        return real_wait(self, event, timeout)

    store = spikestore.Store(store_path)
    for step in range(50):
        store.set_step(step)
        store.append("output/a", np.full(3, float(step)))
    monkeypatch.setattr(Writer, "_wait", wait)
    with pytest.raises(KeyboardInterrupt):
        store.close()
    with pytest.raises(StoreInUseError):  # still this store's writer: nobody else may take over
        spikestore.Store(store_path, mode="w", overwrite=True)
    store.close()  # completes the interrupted close
    assert store.closed and len(_records(store_path)) == 50
    assert spikestore.open(store_path).writer["status"] == "closed"


# -- the lock on the store itself: nothing beside the store, and no other name of it, lets a second writer in --

def _beside(path) -> os.PathLike[str]:
    return path.with_name(path.name + ".lock")


@pytest.mark.slow
def test_deleting_the_lock_file_beside_a_live_store_lets_no_second_writer_in(store_path):
    with spikestore.Store(store_path) as first:
        first.append("output/a", np.ones(3))
        first.flush()
        os.unlink(_beside(store_path))  # what a user cleaning up "stale" lock files does
        for mode, overwrite in (("a", False), ("w", True)):
            with pytest.raises(StoreInUseError, match="another writer"):
                spikestore.Store(store_path, mode=mode, overwrite=overwrite)
        out = subprocess.run([sys.executable, "-c", _OTHER, str(store_path)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("in use:"), out.stdout
        assert _records(store_path) == [[1.0, 1.0, 1.0]]  # the overwrite deleted nothing
        first.set_step(1)
        first.append("output/a", np.zeros(3))
    assert _records(store_path) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert spikestore.open(store_path).writer["status"] == "closed"
    with spikestore.Store(store_path, mode="a") as again:  # free once closed
        again.append("output/a", np.full(3, 2.0))
    assert len(_records(store_path)) == 3


def test_a_hard_link_to_a_live_hdf5_store_is_refused(tmp_path):
    path, alias = tmp_path / "run.h5", tmp_path / "alias.h5"
    with spikestore.Store(path) as first:
        first.append("output/a", np.ones(3))
        first.flush()
        os.link(path, alias)
        for mode, overwrite in (("a", False), ("w", True)):
            with pytest.raises(StoreInUseError, match="another writer"):
                spikestore.Store(alias, mode=mode, overwrite=overwrite)
        assert not _beside(alias).exists()  # the refused writer left nothing behind
        first.set_step(1)
        first.append("output/a", np.zeros(3))
    assert _records(alias) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_a_symlink_to_a_live_store_is_refused_without_the_lock_file_beside_it(store_path):
    link = store_path.with_name("link" + store_path.suffix)
    with spikestore.Store(store_path) as first:
        first.append("output/a", np.ones(3))
        first.flush()
        link.symlink_to(store_path)
        os.unlink(_beside(store_path))
        for mode, overwrite in (("a", False), ("w", True)):
            with pytest.raises(StoreInUseError):
                spikestore.Store(link, mode=mode, overwrite=overwrite)
        assert _records(store_path) == [[1.0, 1.0, 1.0]]
        first.set_step(1)
        first.append("output/a", np.zeros(3))
    assert _records(link) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_a_store_replaced_by_overwrite_is_locked_from_its_creation(store_path):
    with spikestore.Store(store_path) as store:
        store.append("output/a", np.ones(3))
    with spikestore.Store(store_path, mode="w", overwrite=True) as store:
        store.append("output/a", np.zeros(3))
        store.flush()
        os.unlink(_beside(store_path))
        with pytest.raises(StoreInUseError):  # the new file (HDF5) or the emptied folder (Zarr) is held
            spikestore.Store(store_path, mode="a")
    assert _records(store_path) == [[0.0, 0.0, 0.0]]


def test_a_store_that_failed_to_open_leaves_no_folder_it_made(tmp_path, monkeypatch):
    import errno

    from spikestore._write import opening

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "run.zarr"
    monkeypatch.setattr(opening, "open_backend", full)  # fails after the lock made (and locked) the folder
    with pytest.raises(spikestore.WriterError, match="free disk space"):
        spikestore.Store(path, mode="w")
    assert not path.exists() and not _beside(path).exists()
    monkeypatch.undo()
    with spikestore.Store(path, mode="w") as store:  # nothing left in the way
        store.append("output/a", np.ones(3))
    assert _records(path) == [[1.0, 1.0, 1.0]]


_BOUND = textwrap.dedent("""
    import sys, numpy as np, spikestore
    for mode, overwrite in (("a", False), ("w", True)):
        try:
            spikestore.Store(sys.argv[1], mode=mode, overwrite=overwrite).close()
            print("opened", mode)
        except spikestore.StoreInUseError as exc:
            print("in use:", mode)
""")


@pytest.mark.slow
def test_a_store_reached_through_a_bind_mount_is_refused(store_path, tmp_path):
    import shutil

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -m)")
    mount = tmp_path / "elsewhere"
    mount.mkdir()
    with spikestore.Store(store_path) as first:
        first.append("output/a", np.ones(3))
        first.flush()
        os.unlink(_beside(store_path))
        # The store's folder mounted a second time, in a mount namespace of the child's own.
        script = (f"mount --bind {store_path.parent} {mount} && "
                  f"{sys.executable} -c '{_BOUND}' {mount / store_path.name}")
        out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split("\n")[:2] == ["in use: a", "in use: w"], out
        first.set_step(1)
        first.append("output/a", np.zeros(3))
    assert _records(store_path) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
