"""Every array with standard codecs reads bit-exact in a strict Zarr v3 reader that spikestore did not write.

tensorstore's ``zarr3`` driver refuses any byte a chunk's declared codec
chain did not produce (a trailing frame after a Blosc or zstd payload, say),
so reading a fresh store with it proves that the chunks are exactly what
their ``zarr.json`` says (docs/format.md §6). The values are compared with
spikestore's own reads. Spike arrays need spikestore's codec and are left
out, as any reader without it must leave them out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import spikestore

ts = pytest.importorskip("tensorstore")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stores"


def _strict(array_dir: Path) -> np.ndarray:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array_dir)}}
    return np.asarray(ts.open(spec, read=True).result().read().result())


def _standard(array_dir: Path) -> bool:
    meta = json.loads((array_dir / "zarr.json").read_text())
    return not any(c["name"].startswith("spikestore") for c in meta["codecs"])


def _record(path: Path) -> None:
    """Both step modes, several chunks per array, every raw codec, partial last chunks."""
    rng = np.random.default_rng(5)
    with spikestore.Store(path, mode="w", chunk_bytes=4096) as store:
        for step in range(9):
            store.set_step(step)
            batch = 4 if step < 8 else 3  # a short last batch opens a second segment
            store.append("output/lif1", (rng.random((6, batch, 30)) < 0.2).astype(np.float32))  # [T, B, N]
            store.append("v_seq/lif1", rng.standard_normal((6, batch, 60)).astype(np.float32))  # blosc
            store.append("v/big", rng.standard_normal(2048).astype(np.float64))  # blosc, one record a chunk
            for _ in range(3):  # single-step mode: three calls a step
                store.append("v/lif2", rng.standard_normal((batch, 5)).astype(np.float32))  # zstd
                store.append("output/lif2", (rng.random((batch, 5)) < 0.3).astype(np.float32))
            store.append("grad_norm/fc", np.float32(rng.random()))
            store.append("input/counts", rng.integers(0, 9, (batch, 7)).astype(np.int16))


def test_a_strict_zarr_v3_reader_reads_every_standard_array_bit_exact(tmp_path):
    path = tmp_path / "run.zarr"
    _record(path)
    checked = set()
    with spikestore.open(path) as run:
        for key in run.streams:
            s = run[key]
            for name, want in (("step", s.steps), ("call", s.calls), ("time", s.times)):
                got = _strict(path / s.node / name)
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (key, name)
                checked.add(name)
            for seg in s.segments:
                start, count = seg.doc["start"], seg.doc["count"]
                want = np.stack([s[i] for i in range(start, start + count)])
                if not _standard(path / seg.node):
                    assert seg.doc["encoding"] == "bits", seg.node  # spike arrays need spikestore's codec
                    continue
                got = seg.decode_rows(_strict(path / seg.node))  # stored rows to records, as format.md §4 says
                assert got.dtype == want.dtype and got.shape == want.shape, seg.node
                assert got.tobytes() == want.tobytes(), seg.node
                checked.add(f"{seg.doc['codec']['id']} {seg.doc['array']}")
    # every kind of standard array was read: index arrays, blosc and zstd segments, a second segment
    assert {"step", "call", "time", "blosc seg000000", "zstd seg000000", "blosc seg000001"} <= checked


def test_the_strict_reader_refuses_chunks_with_identity_frames():
    # What the test above guards against: stores written with identity frames after the codec's bytes
    # read in zarr-python and spikestore, but not in a strict reader.
    node = FIXTURES / "v2-frames.zarr" / "v_seq" / "fc" / "step"
    with pytest.raises(ValueError, match=r"(?i)blosc|remaining|invalid"):
        _strict(node)
    assert _strict(FIXTURES / "v2-tags.zarr" / "v_seq" / "fc" / "step").dtype == np.int64
