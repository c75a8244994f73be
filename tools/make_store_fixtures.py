#!/usr/bin/env python
"""Write tests/fixtures/stores/: small Zarr and HDF5 stores, and what went into them.

The stores are written once, by the code of the commit that adds them, and
committed. ``tests/test_store_fixtures.py`` reads them with today's code and
compares every record, step and call bit-exact with ``expected.npz`` (the
values handed to ``Store.append``, not what a reader made of them), so a
change that alters how an existing store reads fails the tests.

Each generation of the format has its pair of stores, named after it:
``v1`` (format 1, no chunk identity), ``v2-frames`` (format 2, chunks with
identity frames), ``v2-tags`` (format 2, chunks bound by tags in their
documents). Run only when the format changes, with the name of the new
generation (``python tools/make_store_fixtures.py v2-tags``): it writes that
pair and leaves the others and ``expected.npz`` as they are (they are
written from the same records). ``--expected`` writes ``expected.npz`` too.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

import spikestore

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stores"


def records() -> list[tuple[int, str, object, dict]]:
    """``(step, stream, value, append kwargs)`` in append order, covering each kind of segment."""
    g = torch.Generator().manual_seed(7)
    out: list[tuple[int, str, object, dict]] = []
    for step in range(6):
        n = 5 if step < 4 else 3  # a shorter last batch opens a new segment
        out.append((step, "output/conv.0", (torch.rand(4, n, 2, 3, 5, generator=g) < 0.2).float(), {}))
        out.append((step, "output/fc", (torch.rand(4, n, 28, generator=g) < 0.05).float(), {}))
        out.append((step, "v_seq/fc", torch.randn(4, n, 28, generator=g), {}))
        out.append((step, "v_seq/fc.bf16", torch.randn(4, n, 28, generator=g), {"precision": "bf16"}))
        out.append((step, "v_seq/fc.keep", torch.randn(4, n, 28, generator=g).double(),
                    {"precision": "keepbits:7"}))
        out.append((step, "output/bf16", (torch.rand(n, 12, generator=g) < 0.3).to(torch.bfloat16), {}))
        out.append((step, "input/bf16", torch.randn(n, 12, generator=g).to(torch.bfloat16), {}))
        out.append((step, "output/mask", torch.rand(n, 17, generator=g) < 0.5, {}))
        out.append((step, "output/counts", torch.randint(0, 9, (n, 6), generator=g), {}))
        out.append((step, "grad_input/", torch.rand((), generator=g).item(), {}))
        out.append((step, "output/a/b ü", np.arange(n, dtype=np.int16) * step, {}))
        out.append((step, "output/complex", torch.randn(3, generator=g, dtype=torch.complex64), {}))
        for _ in range(3):  # single-step mode: several records (calls) per step
            out.append((step, "output/sn", (torch.rand(n, 10, generator=g) < 0.1).float(), {}))
    return out


def _as_numpy(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:
            return value.view(torch.int16).numpy().view(np.uint16)  # bit patterns; the test views them back
        return value.numpy()
    return np.asarray(value)


def write(path: Path, label: str) -> None:
    with spikestore.Store(path, mode="w", chunk_bytes=512, metadata={"fixture": label}) as st:
        for step, key, value, kwargs in records():
            st.set_step(step)
            st.append(key, value, **kwargs)
        st.set_stream_info("output/sn", selection={"every": 1, "start": None, "stop": None, "batch": None,
                                                   "neurons": None, "step_mode": "s", "batch_axis": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the format generation the stores are named after, e.g. v2-tags")
    parser.add_argument("--expected", action="store_true", help="also write expected.npz")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for suffix in (".zarr", ".h5"):
        path = OUT / f"{args.name}{suffix}"
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        write(path, f"format {args.name}")
    print(f"wrote {OUT}/{args.name}.zarr and .h5")
    if not args.expected:
        return
    arrays: dict[str, np.ndarray] = {}
    counters: dict[str, int] = {}
    calls: dict[tuple[str, int], int] = {}
    for step, key, value, _ in records():
        i = counters.get(key, 0)
        counters[key] = i + 1
        call = calls.get((key, step), 0)
        calls[(key, step)] = call + 1
        arrays[f"{key}|{i}"] = _as_numpy(value)
        arrays[f"{key}|{i}|step"] = np.int64(step)
        arrays[f"{key}|{i}|call"] = np.int32(call)
    np.savez_compressed(OUT / "expected.npz", **arrays)
    print(f"wrote {OUT}/expected.npz")


if __name__ == "__main__":
    main()
