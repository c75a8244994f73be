"""File-system faults while recording: a full disk, a lost permission, a removed store, a
read-only file system. Each must reach the training thread at its next call as a SpikestoreError naming
the cause; everything flushed before stays readable (bit-exact, and verify finds nothing); close()
returns or raises cleanly, and nothing hangs.

Real faults where this machine allows them (a small tmpfs in a private mount namespace, the file-size
limit, a writer without root's permissions), fault-injecting wrappers otherwise, so that the tests mean
something when they run as root.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import check_fault_outcome, fault_record, run_fault_writer

import spikestore
from spikestore import ReadOnlyError, SpikestoreError, WriterError, verify
from spikestore._write import lock as lock_module
from spikestore.backends import _keys
from spikestore.backends.hdf5 import _faults, _handles

SUFFIX = {"zarr": ".zarr", "hdf5": ".h5"}
BACKENDS = list(SUFFIX)


def _errnos(described: dict) -> set[int]:
    return {no for _name, no in described["chain"] if no}


def _assert_reported(report: dict, *errnos: int) -> None:
    """The failure reached the caller as a SpikestoreError naming the cause; close and reading went cleanly."""
    err = report["error"]
    assert err is not None, report
    assert err["spikestore"], err
    assert _errnos(err) & set(errnos), err
    if report["at"] != "open":
        assert report["close"] == "ok" or report["close"]["spikestore"], report["close"]
    assert report["same_process_read"] in ("ok", None), report["same_process_read"]


@functools.cache
def _can_mount() -> bool:
    """Whether a tmpfs can be mounted in a private mount namespace (root, or user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    probe = ("d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && mount -o remount,ro \"$d\" "
             "&& umount \"$d\" && rmdir \"$d\"")
    for cmd in (["unshare", "-m", "--propagation", "private"], ["unshare", "-rm", "--propagation", "private"]):
        try:
            if subprocess.run([*cmd, "sh", "-c", probe], capture_output=True, timeout=20, check=False).returncode == 0:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    return False


def _in_small_fs(size: str, out: Path, *, read_only: bool = False) -> list[str]:
    """A command prefix: run under a fresh tmpfs of ``size`` (the store's folder), copying it to ``out`` after."""
    mount = f"mount -t tmpfs -o size={size} tmpfs \"$0\""
    if read_only:
        mount += " && mount -o remount,ro \"$0\""
    script = f"{mount} && \"$@\"; rc=$?; cp -a \"$0\"/. \"{out}\"/ 2>/dev/null; exit $rc"
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script]


# -- a full disk ----------------------------------------------------------------------------------------

@pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs here (needs root or user namespaces)")
@pytest.mark.parametrize("size", ["128k", "600k"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_disk_stops_the_writer_and_keeps_every_flushed_record(tmp_path, backend, size):
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    name = f"run{SUFFIX[backend]}"
    report = run_fault_writer(mnt / name, 400, prefix=[*_in_small_fs(size, out), str(mnt)], script_dir=tmp_path)
    _assert_reported(report, errno.ENOSPC)
    if report["at"] == "open":  # too small to create the store: nothing half made is left
        assert not (out / name).exists() or backend == "zarr"
        return
    check_fault_outcome(out / name, report)
    with spikestore.Store(out / name, mode="a") as store:  # room again: recording resumes
        store.append("output/a", fault_record("output/a", 0))


def test_hdf5_reaching_the_file_size_limit_stops_the_writer_and_keeps_every_flushed_record(tmp_path):
    # RLIMIT_FSIZE: writes past the limit fail with EFBIG (SIGXFSZ ignored), as a full disk would.
    path = tmp_path / "run.h5"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    report = run_fault_writer(path, 400, preexec_fn=limit)
    _assert_reported(report, errno.EFBIG)
    assert report["at"] != "open" and report["flushed"], report
    assert check_fault_outcome(path, report) > 50
    with spikestore.Store(path, mode="a") as store:
        n = len(spikestore.open(path)["output/a"])
        store.append("output/a", fault_record("output/a", 0))
    assert len(spikestore.open(path)["output/a"]) == n + 1


def test_zarr_disk_full_mid_run_through_a_wrapper(tmp_path, monkeypatch):
    # Every write the Zarr backend makes goes through write_replacing or open(..., "wb"):
    # fail them with ENOSPC once a byte budget is spent.
    path = tmp_path / "run.zarr"
    budget = [60_000]
    real_replacing, real_open = _keys.write_replacing, open

    def spend(n: int) -> None:
        budget[0] -= n
        if budget[0] < 0:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

    def write_replacing(p: str, data: bytes) -> None:
        spend(len(data))
        real_replacing(p, data)

    def fake_open(p, mode="r", *a, **k):
        if "w" in mode:
            spend(4096)
        return real_open(p, mode, *a, **k)

    monkeypatch.setattr(_keys, "write_replacing", write_replacing)
    monkeypatch.setattr(_keys, "open", fake_open, raising=False)
    store = spikestore.Store(path, chunk_bytes=2048, flush_interval=1000)
    flushed: dict[str, int] = {}
    counts: dict[str, int] = {}
    with pytest.raises(WriterError) as info:
        for i in range(1000):
            store.set_step(i)
            for key in ("output/a", "v/b"):
                store.append(key, fault_record(key, counts.get(key, 0)))
                counts[key] = counts.get(key, 0) + 1
            if i % 5 == 4:
                store.flush()
                flushed = dict(counts)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert "No space left" in str(info.value)
    with pytest.raises(WriterError):
        store.close()
    monkeypatch.undo()
    check_fault_outcome(path, {"flushed": flushed})
    # No new file could be made, so the root's document was overwritten in place.
    assert spikestore.open(path).writer["status"] == "failed", spikestore.open(path).writer


def test_hdf5_lack_of_space_for_a_structure_window_changes_nothing(tmp_path, monkeypatch):
    # A window is refused before it changes anything when its space cannot be reserved: the file
    # stays whole, and the final status is still recorded.
    path = tmp_path / "run.h5"
    store = spikestore.Store(path)
    store.append("output/a", np.ones(8, np.float32))
    store.flush()

    def no_space(fd: int, nbytes: int) -> None:
        raise _faults.SpaceError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_handles, "reserve", no_space)
    store.append("output/new", np.ones(8, np.float32))  # a new stream: a structure window
    with pytest.raises(WriterError, match=r"No space left on device.*free disk space") as info:
        store.flush()
    assert info.value.__cause__.errno == errno.ENOSPC
    with pytest.raises(WriterError):
        store.close()
    run = spikestore.open(path)
    assert run.writer["status"] == "failed" and len(run["output/a"]) == 1
    assert verify(path) == []


@pytest.mark.parametrize("backend", [
    "zarr", "hdf5"])
def test_a_disk_full_at_open_is_a_spikestore_error(tmp_path, monkeypatch, backend):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    monkeypatch.setattr(_keys, "write_replacing", full)
    monkeypatch.setattr(_handles, "reserve", lambda fd, n: (_ for _ in ()).throw(_faults.SpaceError(
        errno.ENOSPC, "No space left on device")))
    path = tmp_path / f"run{SUFFIX[backend]}"
    with pytest.raises(SpikestoreError, match="No space left on device"):
        spikestore.Store(path)
    assert not path.exists() or backend == "zarr"  # (HDF5: the half-created file is removed)
    monkeypatch.undo()
    with spikestore.Store(path, overwrite=True) as store:  # nothing is left locked
        store.append("output/a", np.ones(3, np.float32))


# -- a permission lost mid-run ---------------------------------------------------------------------------

def _without_root_privileges() -> list[str] | None:
    """A command prefix under which permissions apply (root ignores them), or None if there is none."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    cmd = ["setpriv", "--bounding-set", caps, "--inh-caps", caps]
    if shutil.which("setpriv") is None or subprocess.run(
            [*cmd, "true"], capture_output=True, check=False).returncode != 0:
        return None
    return cmd


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_permission_lost_mid_run_stops_the_writer_and_keeps_every_flushed_record(tmp_path, backend):
    # The writer makes its own store read-only at step 12 (as chmod by someone else would);
    # as root, it runs without the capability to override file permissions.
    prefix = _without_root_privileges()
    if prefix is None:
        pytest.skip("running as root, and setpriv cannot drop the capability to override permissions")
    path = tmp_path / f"run{SUFFIX[backend]}"
    try:
        report = run_fault_writer(path, 60, "chmod@12", prefix=prefix)
    finally:
        for root, _dirs, files in os.walk(tmp_path):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
    _assert_reported(report, errno.EACCES, errno.EPERM)
    assert report["flushed"]
    check_fault_outcome(path, report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_permission_lost_mid_run_through_a_wrapper(tmp_path, monkeypatch, backend):
    # The same with root's privileges: new files (Zarr) and the reopening of a structure
    # window (HDF5) are refused with EACCES from step 12 on.
    real_replacing, real_open, real_file = _keys.write_replacing, open, _handles.h5py.File
    lost = [False]

    def check() -> None:
        if lost[0]:
            raise PermissionError(errno.EACCES, "Permission denied (injected)")

    monkeypatch.setattr(_keys, "write_replacing", lambda p, d: (check(), real_replacing(p, d)))
    monkeypatch.setattr(_keys, "open", lambda p, m="r", *a, **k: (check() if "w" in m else None,
                                                                   real_open(p, m, *a, **k))[1], raising=False)
    monkeypatch.setattr(_handles.h5py, "File", lambda p, m="r", *a, **k: (
        check() if m != "r" else None, real_file(p, m, *a, **k))[1])
    path = tmp_path / f"run{SUFFIX[backend]}"
    store = spikestore.Store(path, chunk_bytes=2048)
    flushed: dict[str, int] = {}
    counts: dict[str, int] = {}
    with pytest.raises(WriterError) as info:
        for i in range(60):
            lost[0] = i >= 12
            store.set_step(i)
            for key in ("output/a", "v/b", *([f"new/s{i}"] if i % 7 == 3 else [])):
                store.append(key, fault_record(key, counts.get(key, 0)))
                counts[key] = counts.get(key, 0) + 1
            if i % 5 == 4:
                store.flush()
                flushed = dict(counts)
    assert info.value.__cause__.errno == errno.EACCES and "Permission denied" in str(info.value)
    with pytest.raises(WriterError):
        store.close()
    monkeypatch.undo()
    check_fault_outcome(path, {"flushed": flushed})
    if backend == "zarr":  # no new file, but the root's own file stayed writable: overwritten in place
        writer = spikestore.open(path).writer
        assert writer["status"] == "failed" and "Permission denied" in writer["error"], writer


# -- the store removed mid-run ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_removed_mid_run_stops_the_writer(tmp_path, backend):
    path = tmp_path / f"run{SUFFIX[backend]}"
    report = run_fault_writer(path, 40, "rm@12")
    _assert_reported(report, errno.ENOENT)
    assert not path.exists()


@pytest.mark.parametrize("backend", [
    "zarr", "hdf5"])
def test_a_store_removed_before_a_new_stream_is_not_recreated(tmp_path, backend):
    path = tmp_path / f"run{SUFFIX[backend]}"
    store = spikestore.Store(path)
    store.append("output/a", np.ones(8, np.float32))
    store.flush()
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    store.append("output/new", np.ones(8, np.float32))  # the first write after the removal: a new stream
    with pytest.raises(WriterError, match="No such file or directory") as info:
        store.flush()
    assert info.value.__cause__.errno == errno.ENOENT
    with pytest.raises(WriterError):
        store.close()
    assert not path.exists()


# -- a read-only file system at start ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_only_file_system_at_start_is_a_read_only_error(tmp_path, monkeypatch, backend):
    real_open = os.open

    def ro_open(p, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system (injected)", p)
        return real_open(p, flags, *a, **k)

    monkeypatch.setattr(lock_module.os, "open", ro_open)
    path = tmp_path / f"run{SUFFIX[backend]}"
    with pytest.raises(ReadOnlyError, match="read-only: record to a writable folder") as info:
        spikestore.Store(path)
    assert info.value.errno == errno.EROFS and isinstance(info.value, PermissionError)
    monkeypatch.undo()
    assert not path.exists()


@pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs here (needs root or user namespaces)")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_only_file_system_at_start_for_real(tmp_path, backend):
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    report = run_fault_writer(mnt / f"run{SUFFIX[backend]}", 5,
                              prefix=[*_in_small_fs("64k", out, read_only=True), str(mnt)], script_dir=tmp_path)
    assert report["at"] == "open" and report["error"]["type"] == "ReadOnlyError", report
    assert _errnos(report["error"]) == {errno.EROFS}


# -- the final status ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_final_status_that_cannot_be_written_is_reported_by_close(tmp_path, monkeypatch, backend):
    # The writer closed cleanly, so nothing else would tell the caller that close() did not finish.
    from spikestore._write.root import RootDocument

    path = tmp_path / f"run{SUFFIX[backend]}"
    store = spikestore.Store(path)
    store.append("output/a", np.ones(8, np.float32))

    def full(self, error, failed_streams=None):
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    monkeypatch.setattr(RootDocument, "finish", full)
    with pytest.raises(WriterError, match=r"every record is committed.*No space left") as info:
        store.close()
    assert info.value.__cause__.errno == errno.ENOSPC
    assert store.closed
    store.close()  # idempotent: the failure is reported once
    monkeypatch.undo()
    run = spikestore.open(path)
    assert run.writer["status"] == "open" and len(run["output/a"]) == 1
    run.close()
    with spikestore.Store(path, mode="a") as again:  # the lock was released
        again.append("output/a", np.zeros(8, np.float32))


# -- the final status after a full disk --------------------------------------------------------------------

_ONE_STREAM_WRITER = """
import json, sys
import numpy as np
import spikestore
path = sys.argv[1]
store = spikestore.Store(path, chunk_bytes=2048, flush_interval=1000)
out = {"error": None, "close": "ok"}
try:
    for i in range(200_000):
        store.set_step(i)
        store.append("v/b", np.random.default_rng(i).standard_normal(400).astype(np.float32))
        if i % 5 == 4:
            store.flush()
except spikestore.SpikestoreError as exc:
    out["error"] = str(exc)
try:
    store.close()
except spikestore.SpikestoreError as exc:
    out["close"] = str(exc)
print(json.dumps(out))
"""


def _fill_with_one_stream(path: Path, tmp_path: Path, prefix: list[str], preexec_fn=None) -> dict:
    """Record one stream (no new stream, so no structure window) into ``path`` until the space runs out."""
    script = tmp_path / "one_stream.py"
    script.write_text(_ONE_STREAM_WRITER)
    proc = subprocess.run([*prefix, sys.executable, str(script), str(path)], capture_output=True, text=True,
                          timeout=300, check=False, preexec_fn=preexec_fn)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    return json.loads(lines[-1])


def _assert_failed_with(path: Path, report: dict, reason: str) -> None:
    assert report["error"] is not None and reason in report["error"], report
    run = spikestore.open(path)
    assert run.writer["status"] == "failed", run.writer
    assert reason in run.writer["error"], run.writer
    assert len(run["v/b"]) > 0
    run.close()
    assert verify(path) == []


def test_hdf5_records_failed_when_the_file_size_limit_stops_a_chunk_write(tmp_path):
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    path = tmp_path / "run.h5"
    report = _fill_with_one_stream(path, tmp_path, [], preexec_fn=limit)
    _assert_failed_with(path, report, "File too large")


@pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs here (needs root or user namespaces)")
def test_hdf5_records_failed_when_a_full_disk_stops_a_chunk_write(tmp_path):
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    report = _fill_with_one_stream(mnt / "run.h5", tmp_path, [*_in_small_fs("600k", out), str(mnt)])
    _assert_failed_with(out / "run.h5", report, "No space left on device")
