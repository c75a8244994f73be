"""Parity helpers: with SpikingJelly's own monitors (the nets, the monitor list, the
comparison) for the CPU tests (tests/test_monitor.py) and the CUDA ones (tests/test_cuda.py),
and between stores recorded on the CPU and on CUDA (tests/test_cuda.py, tests/test_cuda_path.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

import spikestore

__all__ = ["MONITORS", "data_files", "firing_rate", "make_monitor", "mixed_records", "same_record",
           "tutorial_net", "write_records"]


def tutorial_net(node: type, step_mode: str, seed: int = 0) -> nn.Module:
    """The tutorial's two-layer net (Linear(8,4)-node-Linear(4,2)-node), positive weights so it spikes."""
    torch.manual_seed(seed)
    net = nn.Sequential(layer.Linear(8, 4), node(), layer.Linear(4, 2), node())
    for p in net.parameters():
        p.data.abs_()
    functional.set_step_mode(net, step_mode)
    return net


def firing_rate(s: torch.Tensor) -> torch.Tensor:
    """A function_on_output: the fraction of neurons firing, per sample."""
    return s.flatten(1).mean(1)


#: Every monitor kind, as (class name, positional args, keyword args).
MONITORS = [
    ("OutputMonitor", (), {}),
    ("OutputMonitor", (), {"function_on_output": firing_rate}),
    ("InputMonitor", (), {}),
    ("AttributeMonitor", ("v", True), {}),
    ("AttributeMonitor", ("v", False), {}),
    ("GradInputMonitor", (), {"function_on_grad_input": torch.norm}),
    ("GradInputMonitor", (), {}),
    ("GradOutputMonitor", (), {}),
]


def make_monitor(mod: Any, cls: str, args: tuple, kwargs: dict, net: nn.Module, node: type, **extra: Any) -> Any:
    """Monitor ``cls`` of module ``mod`` (SpikingJelly's or spikestore's) on ``net``, as :data:`MONITORS` lists it."""
    c = getattr(mod, cls)
    if cls == "AttributeMonitor":
        return c(*args, net, node, **kwargs, **extra)
    return c(net, node, **kwargs, **extra)


def same_record(a: object, b: object) -> bool:
    """Whether a monitor record read back equals SpikingJelly's (tensors moved to the CPU)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
            torch.equal(a.detach().cpu(), b)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same_record(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def mixed_records() -> list[tuple[str, torch.Tensor]]:
    """Every kind of record: spikes of several dtypes and shapes, values that are not binary."""
    g = torch.Generator().manual_seed(7)
    out: list[tuple[str, torch.Tensor]] = []
    for step in range(6):
        spikes = (torch.rand(4, 3, 37, generator=g) < 0.3).float()
        out += [("output/f32", spikes), ("output/f16", spikes.half()), ("output/bf16", spikes.bfloat16()),
                ("output/bool", spikes.bool()), ("output/i8", spikes.to(torch.int8)),
                ("output/i64", spikes.to(torch.int64)), ("output/f64", spikes.double()),
                ("v/f32", torch.randn(4, 3, 37, generator=g)),
                ("v/bf16", torch.randn(5, generator=g).bfloat16()),
                ("grad/scalar", torch.randn((), generator=g)),
                ("x/int16", torch.randint(-300, 300, (9,), generator=g, dtype=torch.int16)),
                ("x/c64", torch.randn(3, generator=g, dtype=torch.complex64))]
        # A stream that is binary, then not, then binary again; a shape change (last batch).
        mixed = (torch.rand(2, 16, generator=g) < 0.5).float()
        out.append(("mixed/a", mixed if step % 3 else mixed * 0.5))
        out.append(("output/shape", (torch.rand(2 if step < 5 else 1, 12, generator=g) < 0.5).float()))
    return out


def write_records(path: Path, records: list[tuple[str, torch.Tensor]], device: str) -> None:
    """A store of :func:`mixed_records` (14 a step) appended from ``device``."""
    with spikestore.Store(path, mode="w") as store:
        for i, (key, t) in enumerate(records):
            store.set_step(i // 14)
            store.append(key, t.to(device))


def data_files(root: Path) -> dict[str, bytes]:
    """Every file of a zarr store but the root document and the wall-time index (they differ by run).

    Stream documents are kept without the tags of their ``time`` chunks, which bind those chunks' bytes.
    """
    out = {}
    for p in sorted(root.rglob("*")):
        name = p.relative_to(root).as_posix()
        if not p.is_file() or name == "zarr.json" or "/time/" in name:
            continue
        data = p.read_bytes()
        if p.name == "zarr.json":
            meta = json.loads(data)
            index = meta.get("attributes", {}).get("spikestore", {}).get("index", {})
            for field in ("tags", "tail"):
                index.get(field, {}).pop("time", None)
            data = json.dumps(meta, sort_keys=True).encode()
        out[name] = data
    return out
