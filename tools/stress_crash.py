#!/usr/bin/env python
"""SIGKILL spikestore writers at chosen instants; check that no flushed record is lost.

Each trial records a store in a child process and kills it (SIGKILL) at one
kind of instant, then checks the store in another child: every record that
``flush()`` returned for must be there, and every record on disk (flushed or
committed later) must equal what was appended, bit for bit, with its step.
Then the store is resumed with ``mode="a"`` by a second writer, which is
killed too (most of the time), more records are written, and everything is
checked again; a third, clean session closes the store if the second was
killed. Kill instants (``--json`` counts them by kind):

``open``
    inside ``Store(...)`` (0-5 ms after the child starts opening);
``random``
    at a uniformly random time within the session;
``flush`` / ``close``
    0-5 ms after the child starts ``flush()`` / ``close()``;
``window``
    0-5 ms after the writer thread starts a structure change: an HDF5
    structure window (new stream, segment or grown document,
    ``docs/format.md`` §10.3) or a Zarr ``create_array``;
``window-self``
    the child kills itself inside that change: before it is made, or after
    it and before HDF5's SWMR restarts;
``close-window``
    0-5 ms after a structure change that ``close()`` makes (every session
    ends with a new stream and a new segment right before ``close()``);
``window-write`` / ``flush-write`` / ``close-write``
    the child is killed right before its n-th write to a file (n random)
    inside a structure change, a ``flush()`` or a ``close()``: between any
    two writes of HDF5's flush, say. A small ``LD_PRELOAD`` library counts
    the writes (compiled with ``cc`` on first use; without a compiler these
    kinds are left out);
``none``
    the kill came too late: the session closed cleanly.

The same kinds prefixed with ``resume-`` kill the writer of a resumed store.
Sessions and checks run in processes forked from a server that imported
spikestore once (``multiprocessing``'s forkserver), each under a timeout: a
session or check that outlives it is a hang. A trial's records are a
deterministic function of ``(seed, session)``, so the checker recomputes
them rather than receiving them.

Usage::

    python tools/stress_crash.py --trials 100 --backend hdf5 --seed 1 --json stress.json

Exit status 1 when any trial lost a record, read a wrong one, hung, or could
not be resumed. ``tests/test_stress.py`` runs a few trials of each backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

KILL_KINDS = ("open", "random", "flush", "close", "window", "window-self", "close-window")
WRITE_KILL_KINDS = ("window-write", "flush-write", "close-write")
#: Counts writes to regular files once armed, and SIGKILLs the process right before the n-th.
_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
static volatile long left = 0;
void stress_arm(long n) { left = n; }
static void count(int fd) {
    struct stat st;
    if (left <= 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    if (__sync_sub_and_fetch(&left, 1) == 0) raise(SIGKILL);
}
ssize_t write(int fd, const void *b, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    count(fd);
    return real(fd, b, n);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite");
    count(fd);
    return real(fd, b, n, o);
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite64");
    count(fd);
    return real(fd, b, n, o);
}
"""
#: Stream kinds, cycled over stream numbers; ``mixed`` alternates bits and raw (segments).
STREAM_KINDS = ("bits", "raw", "bf16", "scalar", "int16", "mixed")
SHAPES = {"bits": [(3, 40), (2, 40)], "raw": [(4, 7), (5,)], "bf16": [(6,)], "scalar": [()],
          "int16": [(5,), (2, 3)], "mixed": [(2, 16)]}
QUANTITIES = ("output", "v_seq", "grad_input")
SESSION_TIMEOUT_S = 60.0
CHECK_TIMEOUT_S = 120.0
_SERVER_ENV = "SPIKESTORE_STRESS_SERVER"

# -- what a session writes: a pure function of (seed, session) -----------------------------


def stream_key(seed: int, k: int) -> tuple[str, str]:
    """Key and kind of stream number ``k``."""
    kind = STREAM_KINDS[(k + seed) % len(STREAM_KINDS)]
    return f"{QUANTITIES[k % len(QUANTITIES)]}/l{k}.{kind}", kind


def record(seed: int, session: int, k: int, j: int, shape_i: int) -> np.ndarray:
    """Record ``j`` of stream ``k`` in ``session``, as it reads back (dtype and shape)."""
    _, kind = stream_key(seed, k)
    shapes = SHAPES[kind]
    shape = shapes[shape_i % len(shapes)]
    rng = np.random.default_rng([seed, session, k, j])
    if kind == "bits" or (kind == "mixed" and j % 3 == 0):
        return (rng.random(shape) < 0.2).astype(np.float32)
    if kind in ("raw", "mixed", "scalar"):
        return np.asarray(rng.standard_normal(shape), dtype=np.float32)
    if kind == "int16":
        return rng.integers(-3000, 3000, shape, dtype=np.int16)
    import ml_dtypes  # bf16: values that bfloat16 holds exactly (low 16 bits cleared)

    bits = rng.standard_normal(shape).astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32).astype(ml_dtypes.bfloat16)


def plan(seed: int, session: int, n_ops: int, reshape: float = 0.03) -> list[tuple[Any, ...]]:
    """The operations of one session: ``("step", t)``, ``("append", k, shape, j)``, ``("flush",)``.

    A session appends to the streams of earlier sessions and opens new ones
    (structure windows); shapes change now and then (new segments): an
    operation is a shape change with probability ``reshape``.
    """
    n_streams = 2
    for s in range(session):  # streams opened by earlier sessions carry on
        n_streams = max(n_streams, 1 + max((op[1] for op in plan(seed, s, n_ops, reshape) if op[0] == "append"),
                                            default=1))
    rng = random.Random(seed * 7919 + session)
    active = list(range(n_streams))
    shape = dict.fromkeys(active, 0)
    count: Counter[int] = Counter()
    ops: list[tuple[Any, ...]] = [("step", 0)]
    t = 0
    for _ in range(n_ops):
        r = rng.random()
        if r < 0.04 and len(active) < 10:
            active.append(len(active))
            shape[active[-1]] = 0
        elif r < 0.10:
            ops.append(("flush",))
        elif r < 0.18:
            t += 1
            ops.append(("step", t))
        elif r < 0.18 + reshape:
            k = rng.choice(active)
            shape[k] += 1
        else:
            k = rng.choice(active)
            ops.append(("append", k, shape[k], count[k]))
            count[k] += 1
    # A new stream and a new segment right before close: structure windows inside close().
    new = len(active)
    ops += [("append", new, 0, 0), ("append", 0, shape[0] + 1, count[0])]
    return ops


def expected_records(history: list[dict[str, Any]]) -> tuple[dict[str, list[tuple[int, tuple]]], dict[str, int]]:
    """What each stream must hold after ``history`` (sessions since the store was created).

    Returns ``({key: [(step, record args), ...]}, {key: records that must be there})``.
    Each session continues each stream at the length observed before it.
    """
    expected: dict[str, list[tuple[int, tuple]]] = {}
    must: dict[str, int] = {}
    for sess in history:
        seed, s = sess["seed"], sess["session"]
        for key, records in expected.items():
            del records[sess["prev_len"].get(key, 0):]
        must = {key: len(v) for key, v in expected.items()}
        step = sess["base"]
        for i, op in enumerate(plan(seed, s, sess["n_ops"], sess.get("reshape", 0.03))):
            if op[0] == "step":
                step = sess["base"] + op[1]
            elif op[0] == "append":
                key, _ = stream_key(seed, op[1])
                expected.setdefault(key, []).append((step, (seed, s, op[1], op[3], op[2])))
                if i <= sess["flushed_op"]:
                    must[key] = len(expected[key])
    return expected, must


# -- child processes -----------------------------------------------------------------------


class _Events:
    """Messages to the parent (thread-safe: the writer thread reports windows)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, *msg: Any) -> None:
        with self.lock:  # one small write each: atomic on a pipe, even under SIGKILL
            self.conn.send(msg)


def _arm(n: int) -> None:
    """SIGKILL this process right before its ``n``-th write to a file from now on (0: never)."""
    import ctypes

    with contextlib.suppress(AttributeError):  # the shim is not loaded
        ctypes.CDLL(None).stress_arm(ctypes.c_long(n))


def _install_window_hooks(events: _Events, self_kill: str | None, at: int, writes: int = 0) -> None:
    """Report structure changes; with ``self_kill``, SIGKILL this process inside the ``at``-th
    (``"before"``/``"after"`` the change, or ``"write"``: right before its ``writes``-th write)."""
    from spikestore.backends._zarr import ZarrBackend
    from spikestore.backends.hdf5._backend import HDF5Backend

    seen = [0]

    def maybe_die(point: str) -> None:
        if self_kill == point and seen[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)

    real_structure = HDF5Backend._structure

    @contextmanager
    def structure(self: HDF5Backend, *args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        events.send("window", seen[0])
        if self_kill == "write" and seen[0] == at:
            _arm(writes)  # counting from the SWMR file's close to the end of SWMR's restart
        try:
            with real_structure(self, *args, **kwargs) as f:
                maybe_die("before")
                yield f
                maybe_die("after")  # made, not yet flushed: SWMR restarts after this
        finally:
            if self_kill == "write" and seen[0] == at:
                _arm(0)

    real_create = ZarrBackend.create_array

    def create_array(self: ZarrBackend, node: str, spec: Any) -> None:
        seen[0] += 1
        events.send("window", seen[0])
        if self_kill == "write" and seen[0] == at:
            _arm(writes)
        maybe_die("before")
        real_create(self, node, spec)
        maybe_die("after")
        if self_kill == "write" and seen[0] == at:
            _arm(0)

    HDF5Backend._structure = structure  # type: ignore[method-assign]
    ZarrBackend.create_array = create_array  # type: ignore[method-assign]


def _session(conn: Any, spec: dict[str, Any]) -> None:
    """A writer session: open, run the plan (reporting flushes), close."""
    import torch

    import spikestore

    events = _Events(conn)
    _install_window_hooks(events, spec.get("self_kill"), spec.get("at", 1), spec.get("writes", 0))
    write_kill = spec.get("write_kill")  # "flush" (the at-th flush) or "close"
    flushes = 0
    events.send("opening")
    store = spikestore.Store(spec["path"], mode=spec["mode"], overwrite=spec["mode"] == "w",
                             chunk_bytes=spec["chunk_bytes"], flush_interval=spec["flush_interval"])
    events.send("opened", store.step)
    base = store.step if spec["mode"] == "a" else 0
    seed, s = spec["seed"], spec["session"]
    for i, op in enumerate(plan(seed, s, spec["n_ops"], spec.get("reshape", 0.03))):
        if op[0] == "step":
            store.set_step(base + op[1])
        elif op[0] == "append":
            value = record(seed, s, op[1], op[3], op[2])
            if value.dtype.name == "bfloat16":
                value = torch.from_numpy(value.view(np.int16)).view(torch.bfloat16)
            store.append(stream_key(seed, op[1])[0], value)
        else:
            flushes += 1
            events.send("flush", i)
            if write_kill == "flush" and flushes == spec["at"]:
                _arm(spec["writes"])
            store.flush()
            _arm(0)
            events.send("flushed", i)
    events.send("close")
    if write_kill == "close":
        _arm(spec["writes"])
    store.close()
    events.send("closed")


def _check(conn: Any, spec: dict[str, Any]) -> None:
    """Compare the store with what the sessions appended; send a summary."""
    import spikestore
    from spikestore import verify
    from spikestore.backends.hdf5 import _handles

    _handles.WINDOW_WAIT_S = 0.2  # no live writer: a window left open means a killed one
    out: dict[str, Any] = {"lens": {}, "max_step": -1, "compared": 0, "lost": [], "wrong": [],
                           "error": None, "absent": False, "verify": []}
    expected, must = expected_records(spec["history"])
    try:
        run = spikestore.open(spec["path"])
    except Exception as exc:  # noqa: BLE001 (any failure to open is judged below)
        # Only a store killed while it was first being created may be missing.
        out["absent"] = True
        if (any(h["opened"] for h in spec["history"]) or any(must.values())
                or not isinstance(exc, spikestore.SpikestoreError)):
            out["error"] = f"{type(exc).__name__}: {exc}"
        conn.send(out)
        return
    try:
        for key in sorted(set(expected) | set(run.streams)):
            n = len(run[key]) if key in run.streams else 0
            out["lens"][key] = n
            want = expected.get(key, [])
            if n < must.get(key, 0):
                out["lost"].append(f"{key}: {n} records, {must[key]} flushed")
            if n > len(want):
                out["wrong"].append(f"{key}: {n} records, only {len(want)} appended")
                continue
            if not n:
                continue
            stream = run[key]
            steps = stream.steps
            out["max_step"] = max(out["max_step"], int(steps[-1]))
            for j, got in enumerate(stream):
                step, args = want[j]
                good = record(*args)
                if (int(steps[j]) != step or got.dtype != good.dtype or got.shape != good.shape
                        or got.tobytes() != good.tobytes()):
                    out["wrong"].append(f"{key}[{j}]: step {int(steps[j])} (want {step}) or value differs")
                out["compared"] += 1
        run.close()
        out["verify"] = verify(spec["path"])
    except Exception as exc:  # noqa: BLE001 (any failure is reported as a failure of the trial)
        out["error"] = f"{type(exc).__name__}: {exc}"
    conn.send(out)


def _warm_up() -> None:
    """Import and compile what the sessions use, once, in the fork server."""
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".zarr", ".h5"):
            spec = {"path": str(Path(tmp) / f"warm{suffix}"), "mode": "w", "seed": 0, "session": 0,
                    "n_ops": 120, "chunk_bytes": 300, "flush_interval": 5.0}

            class Sink:
                def send(self, msg: Any) -> None:
                    pass

            from spikestore.backends._zarr import ZarrBackend
            from spikestore.backends.hdf5._backend import HDF5Backend

            saved = HDF5Backend._structure, ZarrBackend.create_array
            try:
                _session(Sink(), spec)
            finally:
                HDF5Backend._structure, ZarrBackend.create_array = saved
            history = [dict(spec, base=0, prev_len={}, flushed_op=10**9, opened=True)]
            _check(Sink(), {"path": spec["path"], "history": history})


if os.environ.get(_SERVER_ENV) == str(os.getppid()):
    _warm_up()  # imported by the fork server (the parent's child), so its children start warm


# -- the parent ---------------------------------------------------------------------------


def _shim() -> str | None:
    """The write-counting library (compiled once into the temporary folder), or None without a compiler."""
    import hashlib

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not sys.platform.startswith("linux"):
        return None
    out = Path(tempfile.gettempdir()) / f"spikestore-stress-{hashlib.sha256(_SHIM_C.encode()).hexdigest()[:12]}.so"
    if not out.exists():
        src = out.with_suffix(".c")
        src.write_text(_SHIM_C)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        if subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(src), "-ldl"],
                          capture_output=True, check=False).returncode:
            return None
        os.replace(tmp, out)
    return str(out)


def _context(shim: bool = True) -> Any:
    """The fork server: it imports this module (and so warms up) once; sessions fork from it.

    With ``shim``, it runs with the write-counting library preloaded (when it compiles).
    """
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    lib = _shim() if shim else None
    ctx.write_kills = lib is not None
    saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "PYTHONPATH", _SERVER_ENV)}
    if lib:
        os.environ["LD_PRELOAD"] = " ".join(filter(None, [lib, saved["LD_PRELOAD"]]))
    # (the fork server ignores the parent's sys.path, but not PYTHONPATH)
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [saved["PYTHONPATH"]])])
    os.environ[_SERVER_ENV] = str(os.getpid())
    ctx.set_forkserver_preload([Path(__file__).stem])
    try:
        forkserver.ensure_running()  # (started with this environment, which is then put back)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return ctx


def run_session(ctx: Any, spec: dict[str, Any], kill: str, rng: random.Random,
                typical_s: float) -> dict[str, Any]:
    """Run one writer session and kill it as ``kill`` says; return what happened."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_session, args=(send, spec), daemon=True)
    started = time.monotonic()
    proc.start()
    send.close()
    trigger = {"open": "opening", "flush": "flush", "close": "close", "window": "window",
               "close-window": "window"}.get(kill)
    nth = rng.randint(1, 3) if kill in ("flush", "window") else 1
    kill_at = started + rng.uniform(0.05, typical_s) if kill == "random" else None
    out = {"kill": kill, "killed": False, "hang": False, "flushed_op": -1, "opened": False,
           "step": None, "seen": 0, "exit": None, "closing": False}

    def handle(msg: tuple[Any, ...]) -> None:
        nonlocal kill_at
        if msg[0] == "flushed":
            out["flushed_op"] = msg[1]
        elif msg[0] == "opened":
            out["opened"], out["step"] = True, msg[1]
        if msg[0] == "close":
            out["closing"] = True
        if msg[0] == trigger and kill_at is None and (kill != "close-window" or out["closing"]):
            out["seen"] += 1
            if out["seen"] == nth:
                kill_at = time.monotonic() + rng.uniform(0, 0.005)

    while True:
        now = time.monotonic()
        if kill_at is not None and now >= kill_at:
            proc.kill()
            out["killed"] = True
            break
        if now - started > SESSION_TIMEOUT_S:
            proc.kill()
            out["hang"] = True
            break
        wait = 0.05 if kill_at is None else max(0.0, min(0.05, kill_at - now))
        try:
            if recv.poll(wait):
                handle(recv.recv())
            elif not proc.is_alive() and not recv.poll(0):
                break
        except (EOFError, OSError):
            proc.join(SESSION_TIMEOUT_S)
            break
    proc.join(SESSION_TIMEOUT_S)
    try:  # messages sent before the kill (a flush that returned, say)
        while recv.poll(0):
            handle(recv.recv())
    except (EOFError, OSError):
        pass
    recv.close()
    out["exit"] = proc.exitcode
    if proc.exitcode == -signal.SIGKILL and not out["hang"]:
        out["killed"] = True  # (window-self: the child killed itself)
    out["seconds"] = time.monotonic() - started
    return out


def run_check(ctx: Any, path: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_check, args=(send, {"path": str(path), "history": history}), daemon=True)
    proc.start()
    send.close()
    result: dict[str, Any] | None = None
    try:
        if recv.poll(CHECK_TIMEOUT_S):
            result = recv.recv()
    except (EOFError, OSError):
        pass
    if result is None:
        proc.kill()
    proc.join(10)
    recv.close()
    if result is None:
        return {"hang": proc.exitcode in (None, -signal.SIGKILL), "error": f"checker exit {proc.exitcode}",
                "lost": [], "wrong": [], "lens": {}, "max_step": -1, "compared": 0, "verify": [], "absent": False}
    result["hang"] = False
    return result


def run_trial(ctx: Any, backend: str, seed: int, work: Path, stats: dict[str, Any],
              n_ops: int = 150, log: Any = None, only: tuple[str, ...] = (), keep: Path | None = None,
              reshape: float = 0.03) -> None:
    """One trial: a killed session, a resumed one (usually killed too), a clean one if needed."""
    rng = random.Random(seed)
    path = work / f"t{seed}{'.h5' if backend == 'hdf5' else '.zarr'}"
    kinds = tuple(k for k in KILL_KINDS + (WRITE_KILL_KINDS if getattr(ctx, "write_kills", False) else ())
                  if not only or k in only)
    kills = [rng.choice(kinds)]
    kills.append(rng.choice(kinds) if rng.random() < 0.75 else "none")
    history: list[dict[str, Any]] = []
    lens: dict[str, int] = {}
    base = 0
    for s, kill in enumerate([*kills, "none"]):
        mode = "a" if history else "w"
        spec = {"path": str(path), "mode": mode, "seed": seed, "session": s, "n_ops": n_ops, "reshape": reshape,
                "chunk_bytes": rng.choice([200, 700, 4096]), "flush_interval": rng.choice([0.02, 0.2, 5.0])}
        if kill == "window-self":
            spec |= {"self_kill": rng.choice(["before", "after"]), "at": rng.randint(1, 4)}
        elif kill == "window-write":
            spec |= {"self_kill": "write", "at": rng.randint(1, 6), "writes": rng.randint(1, 12)}
        elif kill in ("flush-write", "close-write"):
            spec |= {"write_kill": kill.split("-")[0], "at": rng.randint(1, 3), "writes": rng.randint(1, 40)}
        res = run_session(ctx, spec, kill, rng, stats["typical_s"])
        name = ("resume-" if s else "") + (kill if res["killed"] else "none")
        stats["kill_points"][name] += 1
        stats["sessions"] += 1
        if not res["killed"] and not res["hang"]:
            stats["typical_s"] = 0.8 * stats["typical_s"] + 0.2 * res["seconds"]
        if res["hang"]:
            stats["hangs"].append(f"seed {seed} session {s}: writer ({kill}) did not finish")
        if res["exit"] not in (0, -signal.SIGKILL) and not res["hang"]:
            stats["resume_failures" if mode == "a" else "session_errors"].append(
                f"seed {seed} session {s}: writer exited with {res['exit']}")
        if mode == "a" and res["opened"] and res["step"] != base:
            stats["resume_failures"].append(f"seed {seed} session {s}: resumed at step {res['step']}, "
                                            f"expected {base}")
        history.append({"seed": seed, "session": s, "n_ops": n_ops, "reshape": reshape, "base": base, "prev_len": lens,
                        "flushed_op": res["flushed_op"], "opened": res["opened"]})
        check = run_check(ctx, path, history)
        stats["records_compared"] += check["compared"]
        for field, what in (("lost", "losses"), ("wrong", "wrong_reads")):
            stats[what] += [f"seed {seed} session {s} ({name}): {m}" for m in check[field][:5]]
        if check["hang"]:
            stats["hangs"].append(f"seed {seed} session {s}: checker did not finish")
        if check.get("error"):
            stats["unreadable"].append(f"seed {seed} session {s} ({name}): {check['error'][:300]}")
        if check["verify"]:
            stats["verify_flagged"].append(f"seed {seed} session {s} ({name}): {check['verify'][:3]}")
        failed = check["lost"] or check["wrong"] or check.get("error") or check["verify"] or check["hang"]
        if failed and log is not None:
            print(f"  FAIL seed {seed} session {s} ({name}): {check}", file=log, flush=True)
        if (failed or res["hang"]) and keep is not None and path.exists():  # a reproducer, as the check saw it
            copy = keep / f"{path.stem}.s{s}{path.suffix}"
            shutil.copytree(path, copy) if path.is_dir() else shutil.copy2(path, copy)
        if check["absent"] and not check.get("error"):
            history, lens, base = [], {}, 0  # killed while first created: start over with mode="w"
            continue
        lens, base = dict(check["lens"]), check["max_step"] + 1
        if check["lost"] or check["wrong"] or check.get("error") or check["hang"]:
            break  # the trial has failed; resuming a damaged store tells nothing more
        if s and not res["killed"]:
            break  # a resumed store closed cleanly and checked
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    Path(f"{path}.lock").unlink(missing_ok=True)


def run_backend(backend: str, trials: int, seed: int, *, n_ops: int = 150, log: Any = None,
                ctx: Any = None, only: tuple[str, ...] = (), keep: Path | None = None,
                reshape: float = 0.03) -> dict[str, Any]:
    """``trials`` trials on ``backend``; return the report (see the module docstring)."""
    ctx = ctx or _context()
    stats: dict[str, Any] = {"backend": backend, "trials": trials, "sessions": 0, "records_compared": 0,
                             "kill_points": Counter(), "losses": [], "wrong_reads": [], "hangs": [],
                             "resume_failures": [], "session_errors": [], "unreadable": [],
                             "verify_flagged": [], "typical_s": 1.0}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spikestore-stress-") as tmp:
        for t in range(trials):
            run_trial(ctx, backend, seed * 100003 + t, Path(tmp), stats, n_ops=n_ops, log=log, only=only,
                      keep=keep, reshape=reshape)
            if log is not None and (t + 1) % 10 == 0:
                print(f"{backend}: {t + 1}/{trials} trials, {stats['records_compared']} records compared, "
                      f"{len(stats['losses'])} losses, {len(stats['wrong_reads'])} wrong",
                      file=log, flush=True)
    stats["kill_points"] = dict(sorted(stats["kill_points"].items()))
    stats["seconds"] = round(time.monotonic() - started, 1)
    del stats["typical_s"]
    return stats


def failures(report: dict[str, Any]) -> int:
    return sum(len(report[k]) for k in ("losses", "wrong_reads", "hangs", "resume_failures",
                                        "session_errors", "unreadable", "verify_flagged"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100, help="trials per backend (default 100)")
    ap.add_argument("--backend", choices=["zarr", "hdf5", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ops", type=int, default=150, help="operations per session (default 150)")
    ap.add_argument("--reshape", type=float, default=0.03,
                    help="probability that an operation changes a stream's record shape, making a new "
                         "segment (default 0.03; 0.3 grows documents past their first room)")
    ap.add_argument("--kinds", default="", help="only these kill kinds, comma-separated (default: all)")
    ap.add_argument("--keep", type=Path, help="copy the store of each failing session into this folder")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    ctx = _context()
    backends = ["zarr", "hdf5"] if args.backend == "both" else [args.backend]
    only = tuple(filter(None, args.kinds.split(",")))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    reports = [run_backend(b, args.trials, args.seed, n_ops=args.ops, log=sys.stderr, ctx=ctx, only=only,
                           keep=args.keep, reshape=args.reshape) for b in backends]
    for r in reports:
        print(json.dumps({k: (v if not isinstance(v, list) else len(v)) for k, v in r.items()}))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    return 1 if any(failures(r) for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
