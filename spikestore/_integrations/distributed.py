"""Chunk work on a ``dask.distributed`` cluster: block references that reopen the store where they run.

A dask task that reads a stored chunk must not carry the chunk's bytes from
the client, nor a whole opened run: it carries a :class:`BlockRef`, a few
hundred bytes: its stream (which pickles as the run's reopening recipe and
the stream key), the segment's rank and name, and which records. In the process that built it, a ref holds its live
:class:`~spikestore._read.segment.Block` and reads through the caller's run;
unpickled in another process (a worker), its stream reopens the run once per
process (:func:`spikestore._read.run.worker_run`, kept for later tasks) and
the block reads the chunk there.

:func:`active_client` says whether a ``distributed.Client`` is active;
:func:`map_blocks` runs one function per block, on that client's workers
when there is one and in the calling process otherwise, so the same code
gives the same results either way. ``distributed`` is imported only when a
program has imported it already (a client cannot exist otherwise).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from spikestore._read.padded import PaddedLayout, pad_block
from spikestore._read.segment import Block, Segment
from spikestore.errors import StoreNotFoundError

__all__ = ["BlockRef", "active_client", "map_blocks", "pad_ref"]

R = TypeVar("R")


def active_client() -> Any | None:
    """The active ``distributed.Client``, or ``None`` (no client, or distributed never imported).

    Only a program that imported ``distributed`` can have a client, so this
    never imports it; a closed client counts as none.
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        client = default_client()  # type: ignore[no-untyped-call]
    except ValueError:  # "No clients found"
        return None
    return client if getattr(client, "status", "running") == "running" else None


class BlockRef:
    """A :class:`Block` that pickles as a reference: its stream (a reference itself), segment and records.

    Parameters
    ----------
    block
        The block, read through the caller's run while the ref stays in
        this process.
    """

    def __init__(self, block: Block) -> None:
        seg = block.segment
        self._block: Block | None = block
        self.spec: tuple[Any, ...] = (seg.stream, seg.rank, seg.doc["array"], seg.start, block.start, block.stop,
                                      block.chunk)

    @classmethod
    def _from_spec(cls, spec: tuple[Any, ...]) -> BlockRef:
        ref = cls.__new__(cls)
        ref._block, ref.spec = None, spec
        return ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (BlockRef._from_spec, (self.spec,))

    def __len__(self) -> int:
        return int(self.spec[5] - self.spec[4])

    def block(self) -> Block:
        """The live block: the caller's own, or one read through this process's copy of the run."""
        if self._block is None:
            self._block = _resolve(self.spec)
        return self._block

    def __repr__(self) -> str:
        stream, rank, array, _, start, stop, _ = self.spec
        return f"<BlockRef {stream.key!r} rank {rank} {array} records {start}:{stop}>"


def _resolve(spec: tuple[Any, ...]) -> Block:
    """The block ``spec`` names, in this process's copy of its stream (which reopened the run)."""
    stream, rank, array, seg_start, start, stop, chunk = spec
    seg: Segment | None = next((s for s in stream.segments if s.rank == rank and s.doc["array"] == array), None)
    if seg is None or seg.start != seg_start or seg.stop < stop:
        raise StoreNotFoundError(
            f"stream {stream.key!r} has no committed records {start}:{stop} in segment {array} of rank {rank} "
            "here; the store changed since the dask graph was built (open it again and rebuild the graph)")
    return Block(seg, start, stop, chunk)


def _call(fn: Callable[..., R], ref: BlockRef, args: tuple[Any, ...]) -> R:
    """One task: ``fn(block, *args)`` on the block ``ref`` names."""
    return fn(ref.block(), *args)


def pad_ref(ref: BlockRef, layout: PaddedLayout) -> np.ndarray:
    """One ``to_dask`` task: the records of ``ref``'s block, padded by ``layout`` (:func:`pad_block`)."""
    return pad_block(ref.block(), layout)


def map_blocks(fn: Callable[..., R], blocks: Sequence[Block], args: Sequence[tuple[Any, ...]] | None = None, *,
               name: str = "spikestore") -> list[R]:
    """``[fn(block, *args[i]) for i, block in enumerate(blocks)]``, on the active client's workers when there is one.

    ``fn`` must be a module-level function (it pickles by name) and return
    something small: its results come back to the caller. ``args`` holds
    one tuple of extra arguments per block (small: they travel with each
    task); ``None`` passes none. Without a client this is the plain loop, in
    this process, reading through the caller's run. With one, each block is one task (its key starts with
    ``name``), and a worker reads its chunk itself.
    """
    extra: Sequence[tuple[Any, ...]] = [()] * len(blocks) if args is None else args
    client = active_client()
    if client is None:
        return [fn(b, *a) for b, a in zip(blocks, extra, strict=True)]
    if not blocks:
        return []
    from dask.base import tokenize

    refs = [BlockRef(b) for b in blocks]
    # Whole specs: the parts of a run of several ranks hold blocks with equal stream keys, arrays and
    # positions, which only the segment's rank tells apart.
    token = tokenize(name, fn.__name__, [pickle.dumps(r.spec) for r in refs], extra)
    keys = [f"{name}-{token}-{i}" for i in range(len(refs))]
    futures = client.map(_call, [fn] * len(refs), refs, extra, key=keys)
    results: list[R] = client.gather(futures)
    return results
