"""Helpers shared by several test files (one module, so test files never import each other)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
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
