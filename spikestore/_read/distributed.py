"""Chunk work on a ``dask.distributed`` cluster: block references that reopen the store where they run.

A dask task that reads a stored chunk must not carry the chunk's bytes from
the client, nor a whole opened run: it carries a :class:`BlockRef`, a few
hundred bytes saying how to reopen the run (the run's own pickling recipe,
its path and backend), which stream, which segment and which records. In the
process that built it, a ref holds its live :class:`~spikestore._read.segment.Block`
and reads through the caller's run as before; unpickled in another process
(a worker), it reopens the run once per process (:func:`worker_run`, kept
for later tasks) and reads the chunk there.

:func:`active_client` says whether a ``distributed.Client`` is active;
:func:`map_blocks` runs one function per block, on that client's workers
when there is one and in the calling process otherwise, so the same code
gives the same results either way. ``distributed`` is imported only when a
program has imported it already (a client cannot exist otherwise).
"""

from __future__ import annotations

import pickle
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from spikestore._read.padded import PaddedLayout, pad_block
from spikestore._read.segment import Block
from spikestore.errors import StoreNotFoundError

if TYPE_CHECKING:
    from spikestore._read.run import Run

__all__ = ["WORKER_RUNS", "BlockRef", "active_client", "map_blocks", "open_runs", "pad_ref", "worker_run"]

#: Runs a worker process keeps open for later tasks (least recently used first out).
WORKER_RUNS = 8
_runs: OrderedDict[bytes, Run] = OrderedDict()
_runs_lock = threading.Lock()  # a worker runs several tasks at once, in threads
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
        client = default_client()
    except ValueError:  # "No clients found"
        return None
    return client if getattr(client, "status", "running") == "running" else None


def _reopen_recipe(run: Run) -> tuple[Callable[..., Run], tuple[Any, ...]]:
    """How ``run`` reopens in another process: its own pickling recipe (path and backend)."""
    return run.__reduce__()


def worker_run(recipe: tuple[Callable[..., Run], tuple[Any, ...]], created: str) -> Run:
    """The run ``recipe`` opens, opened once per process and kept (:data:`WORKER_RUNS` at most).

    ``created`` is the store's creation time from the client's root
    document: a copy kept here of a store that was replaced since (same
    path, another ``created``) is refreshed, and a store that is not the
    one the graph was built on is an error rather than a read of other data.
    """
    key = pickle.dumps(recipe)
    with _runs_lock:
        run = _runs.get(key)
        if run is not None and run.doc["created"] != created:
            run.refresh()
        if run is None or run.doc["created"] != created:
            func, args = recipe
            run = func(*args)
            _runs[key] = run
        _runs.move_to_end(key)
        while len(_runs) > WORKER_RUNS:
            _runs.popitem(last=False)
    if run.doc["created"] != created:
        raise StoreNotFoundError(
            f"{run.path} was replaced by another store (created {run.doc['created']}, not {created}) "
            "since this dask graph was built; open it again and build the graph again")
    return run


def open_runs() -> list[str]:
    """Where the runs this process opened for tasks are (what a worker holds open; for checks and debugging)."""
    with _runs_lock:
        return [str(run.path) for run in _runs.values()]


class BlockRef:
    """A :class:`Block` that pickles as a reference: run recipe, stream, segment and records.

    Parameters
    ----------
    block
        The block, read through the caller's run while the ref stays in
        this process.
    """

    def __init__(self, block: Block) -> None:
        seg = block.segment
        run = seg.stream.run
        self._block: Block | None = block
        self.spec = (_reopen_recipe(run), run.doc["created"], seg.stream.key, seg.doc["array"], seg.start,
                     block.start, block.stop, block.chunk)

    @classmethod
    def _from_spec(cls, spec: tuple[Any, ...]) -> BlockRef:
        ref = cls.__new__(cls)
        ref._block, ref.spec = None, spec
        return ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (BlockRef._from_spec, (self.spec,))

    def __len__(self) -> int:
        return self.spec[6] - self.spec[5]

    def block(self) -> Block:
        """The live block: the caller's own, or one read through this process's copy of the run."""
        if self._block is None:
            self._block = _resolve(self.spec)
        return self._block

    def __repr__(self) -> str:
        return f"<BlockRef {self.spec[2]!r} {self.spec[3]} records {self.spec[5]}:{self.spec[6]}>"


def _resolve(spec: tuple[Any, ...]) -> Block:
    """The block ``spec`` names, in this process's copy of the run (refreshed once if it is older)."""
    recipe, created, key, array, seg_start, start, stop, chunk = spec
    run = worker_run(recipe, created)
    for attempt in range(2):
        seg = next((s for s in run[key].segments if s.doc["array"] == array), None)
        if seg is not None and seg.start == seg_start and seg.stop >= stop:
            return Block(seg, start, stop, chunk)
        if attempt == 0:  # records committed after this process opened the run
            with _runs_lock:
                run.refresh()
    raise StoreNotFoundError(
        f"{run.path}: stream {key!r} has no committed records {start}:{stop} in segment {array} here; "
        "the store changed since the dask graph was built (open it again and rebuild the graph)")


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
    this process, reading through the caller's run: the single-process path
    is unchanged. With one, each block is one task (its key starts with
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
    # positions, which only the reopening recipe (the part's path and rank) tells apart.
    token = tokenize(name, fn.__name__, [pickle.dumps(r.spec) for r in refs], extra)
    keys = [f"{name}-{token}-{i}" for i in range(len(refs))]
    futures = client.map(_call, [fn] * len(refs), refs, extra, key=keys)
    return client.gather(futures)
