"""Comparing training loops on a noisy machine: short blocks of steps, alternated, in one process.

Whole runs compared one after another (``tools/bench_workload.py``) differ
by ±10-25% on the shared 2-core machine, because slow patches last seconds.
Here each variant (unmonitored, monitored, ...) keeps its own copy of the
network and trains the same batches a block of a few steps at a time, the
variants taking turns in rotating order, so that a slow patch hits all of
them within a round. A round's ratio compares the variants' blocks.

A variant that records to a store leaves work for its writer thread; its
block ends only when the writer has caught up (its thread's CPU clock still
for 15 ms; no commit is forced), and the CPU the writer spent catching up
is added to the block's time. The next block then starts with the writer
idle, and each block pays for all the writing its steps caused.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Blocks", "alternate", "caught_up", "floor_hooks", "median_interval", "writer_cpu"]

WRITER_THREAD = "spikestore-writer"


def writer_cpu() -> float:
    """CPU seconds of every spikestore writer thread so far (one per open store); 0 when none runs.

    Every block ends with all writers caught up, so what the sum gains during
    a block is the writing of that block's own store.
    """
    total = 0.0
    for thread in threading.enumerate():
        if thread.name == WRITER_THREAD and thread.ident is not None:
            with contextlib.suppress(OSError):  # (the thread ended meanwhile)
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


def caught_up(still: float = 0.015) -> float:
    """Wait until the writer thread's CPU clock has not moved for ``still`` seconds; its reading then."""
    last = writer_cpu()
    while True:
        time.sleep(still)
        now = writer_cpu()
        if now == last:
            return now
        last = now


def floor_hooks(net: Any, kind: str) -> None:
    """Hook every LIF layer of ``net`` with the least a recorder of its outputs spends, keeping nothing.

    ``kind`` ``"read"``: read each output once (``np.count_nonzero``);
    ``"pack"``: check and pack it with the library's kernel
    (:class:`spikestore.codecs._packing.Packer`), as a store's hook does.
    """
    import numpy as np
    from spikingjelly.activation_based import neuron

    from spikestore.codecs._packing import Packer

    if kind not in ("read", "pack"):
        raise ValueError(f"kind must be 'read' or 'pack', not {kind!r}")
    packer = Packer()

    def hook(module: Any, args: Any, out: Any) -> None:
        values = out.detach().numpy()
        if kind == "read":
            np.count_nonzero(values)
        elif packer.pack(values) is None:
            raise SystemExit("a LIF output that is not binary")

    for mod in net.modules():
        if isinstance(mod, neuron.LIFNode):
            mod.register_forward_hook(hook)


def median_interval(values: Sequence[float], level: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """A bootstrap confidence interval of the median of ``values`` (percentiles of resampled medians).

    Seeded, so the same per-round ratios always give the same interval.
    """
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = int(resamples * (1 - level) / 2)
    return medians[tail], medians[resamples - 1 - tail]


@dataclass
class Blocks:
    """What :func:`alternate` measured: per variant, one entry per round."""

    wall: dict[str, list[float]] = field(default_factory=dict)  # seconds of the block (writer catch-up included)
    writer: dict[str, list[float]] = field(default_factory=dict)  # writer CPU seconds during the block

    def ratios(self, variant: str, baseline: str) -> list[float]:
        """Per round, ``variant``'s block time over ``baseline``'s."""
        return [a / b for a, b in zip(self.wall[variant], self.wall[baseline], strict=True)]


def alternate(variants: dict[str, Callable[[Sequence[Any], int], Any]], batches: Sequence[Any], *,
              warmup: int, block: int, rounds: int, writes: Sequence[str] = (),
              report: Callable[[int, dict[str, float]], None] | None = None) -> Blocks:
    """Train every variant on ``batches`` in alternated blocks; time each block.

    Parameters
    ----------
    variants
        Name -> ``train(batches, start)``, which trains those batches as
        steps ``start, start + 1, ...`` on the variant's own network.
    batches
        ``warmup + rounds * block`` batches; the first ``warmup`` train every
        variant untimed.
    writes
        The variants that record to a store: their blocks wait for the writer.
    report
        Called after each round with its number and each variant's seconds per step.
    """
    names = list(variants)
    orders = list(itertools.permutations(names))
    for name in names:
        variants[name](batches[:warmup], 0)
        if name in writes:
            caught_up()
    out = Blocks({n: [] for n in names}, {n: [] for n in names})
    for r in range(rounds):
        lo = warmup + r * block
        part = batches[lo: lo + block]
        for name in orders[r % len(orders)]:
            w0, t0 = writer_cpu(), time.perf_counter()
            variants[name](part, lo)
            wall = time.perf_counter() - t0
            if name in writes:
                at_end = writer_cpu()
                wall += caught_up() - at_end
            out.wall[name].append(wall)
            out.writer[name].append(writer_cpu() - w0)
        if report is not None:
            report(r, {n: out.wall[n][-1] / block for n in names})
    return out
