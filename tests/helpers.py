"""Helpers shared by several test files (one module, so test files never import each other)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

import spikestore
from spikestore.backends import open_backend

# -- read side ---------------------------------------------------------------------------

#: Stream selections as monitors write them: multi-step ``[T, N, ...]`` and single-step ``[N, ...]``.
M_SEL = {"every": 1, "start": None, "stop": None, "batch": None, "neurons": None,
         "step_mode": "m", "batch_axis": 1}
S_SEL = dict(M_SEL, step_mode="s", batch_axis=0)


def same(a: object, b: object) -> None:
    """Assert equal dtype, shape and values (bfloat16 compared bit for bit)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    np.testing.assert_array_equal(a.view(np.uint16) if a.dtype == ml_dtypes.bfloat16 else a,
                                  b.view(np.uint16) if b.dtype == ml_dtypes.bfloat16 else b)


def write_mixed(path: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """A store with every kind of stream; returns ``{key: [(step, value), ...]}`` as written.

    Multi-step spikes and voltages with a smaller last batch (two segments),
    single-step spikes (three records a step), scalar gradients, int16,
    bool, and bfloat16 records that alternate between binary (bit-packed)
    and not (raw), so that stream has many segments of one shape.
    """
    rng = np.random.default_rng(0)
    written: dict[str, list[tuple[int, np.ndarray]]] = {}

    def add(store: spikestore.Store, key: str, step: int, value: np.ndarray) -> None:
        store.append(key, value)
        written.setdefault(key, []).append((step, np.asarray(value)))

    with spikestore.Store(path, mode="w", chunk_bytes=96, metadata={"lr": 0.1}) as store:
        store.set_stream_info("output/fc", selection=M_SEL)
        store.set_stream_info("v_seq/fc", selection=M_SEL)
        store.set_stream_info("output/s", selection=S_SEL)
        for step in range(23):
            store.set_step(step)
            batch = 3 if step < 20 else 2           # a smaller last batch: a second segment
            add(store, "output/fc", step, (rng.random((4, batch, 10)) < 0.3).astype(np.float32))
            add(store, "v_seq/fc", step, rng.standard_normal((4, batch, 10)).astype(np.float32))
            for _t in range(3):                      # single-step mode: one record per time step
                add(store, "output/s", step, (rng.random((batch, 6)) < 0.4).astype(np.float32))
            add(store, "grad_input/fc", step, np.float32(rng.random()))
            add(store, "x/int16", step, rng.integers(-300, 300, (5,), dtype=np.int16))
            add(store, "x/bool", step, rng.random((2, 9)) < 0.5)
            bf = torch.from_numpy(rng.standard_normal(7).astype(np.float32)).bfloat16()
            bf = bf if step % 2 else (bf > 0).bfloat16()   # binary records are bit-packed
            store.append("x/bf16", bf)
            written.setdefault("x/bf16", []).append((step, bf.view(torch.int16).numpy().view(ml_dtypes.bfloat16)))
    return written


def count_chunk_reads(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[tuple[str, int]]:
    """Record every chunk the backend of the store at ``path`` reads from now on, as ``(node, chunk)``."""
    probe = open_backend(path, backend=None, writable=False)
    backend = type(probe)
    probe.close()
    real = backend.read_chunk
    reads: list[tuple[str, int]] = []

    def read_chunk(self: object, node: str, chunk: int) -> bytes | None:
        reads.append((node, chunk))
        return real(self, node, chunk)

    monkeypatch.setattr(backend, "read_chunk", read_chunk)
    return reads


# -- write side ---------------------------------------------------------------------------

NP_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
             "complex64"]


def _draw_record(draw, shape, binary, dtype):
    if binary:
        return draw(hnp.arrays(np.bool_, shape)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        return draw(hnp.arrays(dtype, shape, elements=st.floats(-1e3, 1e3, width=np.dtype(dtype).itemsize * 8,
                                                                 allow_subnormal=False)))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def record_streams(draw):
    """A list of records for one stream, with mid-stream shape/dtype changes."""
    out = []
    for _ in range(draw(st.integers(1, 4))):  # segments
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
        dtype = draw(st.sampled_from(NP_DTYPES))
        binary = draw(st.booleans())
        for _ in range(draw(st.integers(1, 5))):
            out.append(_draw_record(draw, shape, binary, dtype))
    return out


def write_example_store(path: Path) -> None:
    """The store the documented readers are checked on: bits with a shape change, raw
    floats, a scalar stream with an empty layer name, a bool stream with a nested layer."""
    g = torch.Generator().manual_seed(0)
    with spikestore.Store(path, chunk_bytes=300) as st:
        for step in range(7):
            st.set_step(step)
            st.append("output/fc1", (torch.rand(8, 4, 10 if step < 5 else 9, generator=g) < .2).float())
            st.append("v_seq/fc1", torch.rand(8, 4, 10, generator=g))
            st.append("v_seq/", torch.rand(()).item())
            st.append("output/a/b", torch.rand(3, 17, generator=g) < .5)


# -- crashes --------------------------------------------------------------------------------

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


def crash_record(i: int) -> np.ndarray:
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
            np.testing.assert_array_equal(s[j], crash_record(int(step)))
    return a, max(int(a.steps[-1]), int(v.steps[-1]) if n_v else -1)


# -- monitors -------------------------------------------------------------------------------

def deep_net(alpha: float) -> nn.Module:
    torch.manual_seed(1)
    mods = []
    for _ in range(4):
        mods += [layer.Linear(8, 8), neuron.IFNode(surrogate_function=surrogate.Sigmoid(alpha=alpha))]
    net = nn.Sequential(*mods)
    functional.set_step_mode(net, "m")
    return net


def run_steps(net: nn.Module, step_mode: str, steps: int, store=None, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if store is not None:
            store.set_step(step)
        if step_mode == "m":
            x = torch.rand(4, 2, 8, generator=g)
            out = net(x)
        else:
            out = torch.stack([net(xt) for xt in torch.rand(4, 2, 8, generator=g)])
        out.sum().backward()
        functional.reset_net(net)


# -- file-system faults (tests/test_faults.py) ------------------------------------------------

#: A writer that records until something fails, in its own process. argv: store path,
#: steps, fault (``none``, ``chmod@K``: make the store read-only before step K, ``rm@K``:
#: remove it before step K). It flushes every 5 steps, opens a new stream every 7
#: (structure windows), then closes, reads every flushed record back in the same
#: process, and prints a JSON report.
FAULT_WRITER = textwrap.dedent("""
    import json, os, shutil, stat, sys
    sys.path.insert(0, os.environ["SPIKESTORE_TESTS"])
    import spikestore
    from helpers import fault_keys, fault_record
    path, steps, fault = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    kind, at = (fault.split("@") + ["-1"])[:2]
    out = {"flushed": {}, "error": None, "at": None, "close": None, "same_process_read": None}

    def describe(exc):
        chain, e = [], exc
        while e is not None:
            chain.append([type(e).__name__, getattr(e, "errno", None)])
            e = e.__cause__
        return {"type": type(exc).__name__, "spikestore": isinstance(exc, spikestore.SpikestoreError),
                "message": str(exc)[:600], "chain": chain}

    def read_only(p):
        # The writer thread renames *.partial files meanwhile: one listed may be gone.
        for root, dirs, files in os.walk(p):
            for f in files:
                try:
                    os.chmod(os.path.join(root, f), 0o444)
                except FileNotFoundError:
                    pass
            os.chmod(root, 0o555)
        if os.path.isfile(p):
            os.chmod(p, 0o444)

    try:
        store = spikestore.Store(path, chunk_bytes=2048, flush_interval=1000)
    except Exception as exc:
        out["error"], out["at"] = describe(exc), "open"
        print(json.dumps(out)); sys.exit(0)
    counts = {}
    try:
        for i in range(steps):
            if i == int(at) and kind == "chmod":
                read_only(path)
            if i == int(at) and kind == "rm":  # (renamed first: the writer thread may be adding files)
                os.rename(path, path + ".removed")
                shutil.rmtree(path + ".removed") if os.path.isdir(path + ".removed") else os.unlink(path + ".removed")
            store.set_step(i)
            for key in fault_keys(i):
                store.append(key, fault_record(key, counts.get(key, 0)))
                counts[key] = counts.get(key, 0) + 1
            if i % 5 == 4:
                store.flush()
                out["flushed"] = dict(counts)
    except Exception as exc:
        out["error"], out["at"] = describe(exc), i
    try:
        store.close()
        out["close"] = "ok"
    except Exception as exc:
        out["close"] = describe(exc)
    try:
        if os.path.exists(path):
            run = spikestore.open(path)
            for key, n in out["flushed"].items():
                s = run[key]
                assert len(s) >= n, (key, len(s), n)
                for j in range(n):
                    assert s[j].tobytes() == fault_record(key, j).tobytes(), (key, j)
            run.close()
            out["same_process_read"] = "ok"
    except Exception as exc:
        out["same_process_read"] = describe(exc)
    print(json.dumps(out))
""")


def fault_keys(step: int) -> list[str]:
    """Streams :data:`FAULT_WRITER` appends to at ``step``: two always, a new one every 7 steps."""
    return ["output/a", "v/b"] + ([f"new/s{step}"] if step % 7 == 3 else [])


def fault_record(key: str, j: int) -> np.ndarray:
    """Record ``j`` of ``key`` in :data:`FAULT_WRITER`: spikes, or incompressible floats."""
    rng = np.random.default_rng([sum(key.encode()), j])
    if key == "v/b":
        return rng.standard_normal(400).astype(np.float32)
    return (rng.random((3, 40)) < 0.2).astype(np.float32)


def run_fault_writer(path: Path, steps: int, fault: str = "none", *, prefix: list[str] | None = None,
                     preexec_fn=None, timeout: float = 180, script_dir: Path | None = None) -> dict:
    """Run :data:`FAULT_WRITER` (under ``prefix``, e.g. ``unshare``); return its report."""
    import json

    script = (script_dir or path.parent) / "fault_writer.py"
    script.write_text(FAULT_WRITER)
    env = dict(os.environ, SPIKESTORE_TESTS=str(Path(__file__).parent))
    proc = subprocess.run([*(prefix or []), sys.executable, str(script), str(path), str(steps), fault],
                          check=False, capture_output=True, text=True, env=env, timeout=timeout,
                          preexec_fn=preexec_fn)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    return json.loads(lines[-1])


def check_fault_outcome(path: Path, report: dict) -> int:
    """Every record :data:`FAULT_WRITER` flushed reads back bit-exact, and verify finds nothing.

    Returns how many records were checked.
    """
    from spikestore import verify

    run = spikestore.open(path)
    checked = 0
    for key, n in report["flushed"].items():
        s = run[key]
        assert len(s) >= n, (key, len(s), n)
        for j in range(n):
            same(s[j], fault_record(key, j))
            checked += 1
    run.close()
    assert verify(path) == []
    return checked


@contextmanager
def writer_held(store: spikestore.Store):
    """Keep the writer thread from reading any record until the block ends."""
    gate = threading.Event()
    writer = store._writer
    orig = writer._write_frame

    def held(frame):
        gate.wait(30)
        orig(frame)

    writer._write_frame = held
    try:
        yield
    finally:
        gate.set()


#: The bits stream of :func:`write_small_store`, and the zarr.json of each kind of node it has.
SMALL_STORE_STREAM = "output/fc"
SMALL_STORE_ZARR_JSON = {
    "root": "zarr.json",
    "quantity": "output/zarr.json",
    "stream": "output/fc/zarr.json",
    "segment": "output/fc/seg000000/zarr.json",
    "step": "output/fc/step/zarr.json",
    "call": "output/fc/call/zarr.json",
    "time": "output/fc/time/zarr.json",
}


def write_small_store(path: Path, steps: int = 12, stream: str = SMALL_STORE_STREAM) -> None:
    """A small store of one bits stream and one raw stream, with many chunks (tests that damage stores)."""
    rng = np.random.default_rng(0)
    with spikestore.Store(path, chunk_bytes=64) as st:
        for step in range(steps):
            st.set_step(step)
            st.append(stream, (rng.random((4, 10)) < 0.3).astype(np.float32))
            st.append("v/fc", rng.random(30).astype(np.float32))


# -- a real process group: gloo ranks training a DDP network ----------------------------

#: The LIF layers of :func:`ddp_spiking_net`, by their names in ``named_modules()``.
DDP_LAYERS = ("1", "3")


def spawn_ranks(train: Callable[..., None], out: Path, *args: object, world: int = 2) -> list[int | None]:
    """Run ``train(rank, world, *args)`` in ``world`` spawned processes, each a rank of one gloo group.

    ``train`` must be a module-level function (it is pickled to the ranks).
    A rank's exception is written to ``out/error<rank>.txt`` and asserted
    absent here. Returns the exit codes, the ranks joined one by one, so a
    rank that kills itself kills no other.
    """
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    ctx = mp.spawn(_rank_main, args=(train, world, port, str(out), args), nprocs=world, join=False)
    for proc in ctx.processes:
        proc.join(120)
    errors = "\n".join(f.read_text() for f in sorted(out.glob("error*.txt")))
    assert not errors, errors
    return [proc.exitcode for proc in ctx.processes]


def _rank_main(rank: int, train: Callable[..., None], world: int, port: int, out: str,
               args: tuple[object, ...]) -> None:
    import torch.distributed as dist

    try:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        train(rank, world, *args)
    except BaseException:
        import traceback

        (Path(out) / f"error{rank}.txt").write_text(traceback.format_exc())
        raise


def ddp_spiking_net() -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """``(net, ddp_model, optimizer)``: two LIF layers (:data:`DDP_LAYERS`) in multi-step mode, the same
    weights on every rank, with enough drive that both layers spike; call inside a process group."""
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(8, 16), neuron.LIFNode(tau=2.0), layer.Linear(16, 4), neuron.LIFNode(tau=2.0))
    functional.set_step_mode(net, "m")
    with torch.no_grad():
        net[0].weight.mul_(2)
        net[2].weight.mul_(4)
    model = nn.parallel.DistributedDataParallel(net)
    return net, model, torch.optim.SGD(model.parameters(), lr=0.05)


def ddp_step(net: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator) -> None:
    """One training step of :func:`ddp_spiking_net` on random input from ``g`` (each rank its own)."""
    opt.zero_grad()
    ((model(torch.rand(4, 3, 8, generator=g) * 6).mean() - 0.3) ** 2).backward()
    opt.step()
    functional.reset_net(net)


def save_rank_records(ref: object, rank: int, out: str | Path) -> None:
    """Save a SpikingJelly monitor's records of every :data:`DDP_LAYERS` layer for the parent to compare."""
    for name in DDP_LAYERS:
        np.save(Path(out) / f"rank{rank}_{name}.npy", np.stack([t.detach().numpy() for t in ref[name]]))


def rank_records(out: Path, rank: int, name: str) -> np.ndarray:
    """What :func:`save_rank_records` saved for ``rank``'s layer ``name``."""
    return np.load(out / f"rank{rank}_{name}.npy")


# -- runs recorded by several ranks, without spawning them -------------------------------


def record_as_ranks(path: Path, monkeypatch: pytest.MonkeyPatch, record: Callable[[spikestore.Store, int], None],
                    *, world: int = 2, mode: str = "w", **store_kwargs: object) -> None:
    """Record a run of ``world`` ranks rank by rank in this process, as a process group would.

    The group is faked (``group_rank`` says each rank in turn, the one
    broadcast at open returns what rank 0 found), only while recording; so
    each ``Store(path, mode=mode)`` writes rank ``r``'s part exactly as that
    rank would, in a fraction of a second. ``record(store, r)`` writes
    rank ``r``'s records.
    """
    from spikestore._write import group as ranks

    with monkeypatch.context() as m:
        m.setattr(ranks, "_broadcast_failure", lambda failure: failure)
        for r in range(world):
            m.setattr(ranks, "group_rank", lambda r=r: (r, world))
            with spikestore.Store(path, mode=mode, **store_kwargs) as store:
                assert store.path == (path if r == 0 else path / f"__rank{r}")
                record(store, r)


def check_stream(run: spikestore.Run, key: str, reference: list[np.ndarray], steps: np.ndarray,
                 calls: np.ndarray) -> None:
    """Stream ``key`` holds exactly ``reference`` (float32), in order, at ``steps``/``calls``, with its dtype."""
    s = run[key]
    want = np.stack(reference)
    assert len(s) == len(reference), key
    np.testing.assert_array_equal(s.steps, steps, err_msg=key)
    np.testing.assert_array_equal(s.calls, calls, err_msg=key)
    got = s[:]
    assert got.dtype == want.dtype == np.float32, key
    assert np.array_equal(got, want), key


def not_trivial(spikes: list[np.ndarray]) -> None:
    """The reference spikes fire, not everywhere, and differ between records (so an order shows)."""
    a = np.stack(spikes)
    assert 0 < a.mean() < 1
    assert len({r.tobytes() for r in a}) > len(a) // 2
