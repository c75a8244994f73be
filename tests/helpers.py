"""Helpers shared by several test files (one module, so test files never import each other)."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

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
