"""One run recorded by every rank of a process group: where each rank writes.

Inside an initialised default ``torch.distributed`` process group of two or
more ranks, ``spikestore.Store(path, mode=...)`` run by every rank records
one run (``docs/format.md`` §1.2): rank 0 writes the store at ``path`` as a
one-process program would, its root listing ``ranks``; rank ``r > 0`` writes
a complete store of its own at ``path/__rank<r>``, with its own writer lock
(on object storage, where ``path`` is a URL and the part a key prefix under
it, the lock object ``path/__rank<r>.lock``), commits and crash-safety. The ranks meet once, when they open: rank 0
creates (or resumes) the root, then tells the others through the process
group (a broadcast, which is also the barrier) whether that worked; only
then do they open their parts. Nothing is shared on the recording path.

Every rank must call ``Store(...)`` in the same order (a collective, like
every ``torch.distributed`` call), which is what a script run by
``torchrun`` or ``torch.multiprocessing.spawn`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from spikestore.backends import StoreURL, part_location
from spikestore.errors import InvalidArgumentError, WriterError

__all__ = ["group_rank", "open_part"]

T = TypeVar("T")


def group_rank() -> tuple[int, int] | None:
    """``(rank, world size)`` of the default process group, or ``None`` outside one (or a world of one).

    ``torch.distributed`` is looked at only when a program has imported
    torch, so a reader-only install never imports it.
    """
    if "torch" not in sys.modules:
        return None
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch built without distributed
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    return (dist.get_rank(), world) if world > 1 else None


def _broadcast_failure(failure: str | None) -> str | None:
    """Rank 0's failure (``None``: none) as every rank sees it; the one meeting of the ranks."""
    import torch.distributed as dist

    box: list[Any] = [failure]
    dist.broadcast_object_list(box, src=0)
    got = box[0]
    return None if got is None else str(got)


def open_part(path: Path | StoreURL, backend_name: str, ranked: bool,
              opener: Callable[..., T]) -> tuple[Path | StoreURL, T]:
    """Open this rank's part of the run at ``path``: ``opener(part path, **what the root records)``.

    Outside a process group (or in a world of one), and with ``ranked``
    false (one process records alone, e.g. rank 0 only: the others never
    call ``Store``, so waiting for them would hang), this is
    ``opener(path)``: the store of a one-process program, unchanged. In a
    group, rank 0 opens ``path`` listing every rank (``ranks=``), then all
    ranks learn whether it worked; rank ``r > 0`` then opens
    ``path/__rank<r>`` marked as its part (``part_of=r``).

    Raises
    ------
    InvalidArgumentError
        For an HDF5 store inside a process group: HDF5 has no parallel
        writers without MPI; record a Zarr store (a folder, or a URL: each
        rank's part on object storage is a key prefix of the run's URL,
        written by that rank alone under a lock of its own).
    WriterError
        On ranks ``r > 0`` when rank 0 failed to open the root (rank 0 raises
        its own error).
    """
    group = group_rank() if ranked else None
    if group is None:
        return path, opener(path)
    rank, world = group
    if backend_name != "zarr":
        raise InvalidArgumentError(
            f"{path}: {world} ranks of a process group cannot record into an HDF5 file (HDF5 has no "
            "parallel writers without MPI): record a Zarr store (a folder such as 'run.zarr', or a URL "
            "such as 's3://bucket/run.zarr'), then export it")
    if rank == 0:
        try:
            opened = opener(path, ranks=list(range(world)))
        except BaseException as exc:
            _broadcast_failure(f"{type(exc).__name__}: {exc}")
            raise
        _broadcast_failure(None)
        return path, opened
    failure = _broadcast_failure(None)
    if failure is not None:
        raise WriterError(
            f"{path}: rank 0 could not open the run's root ({failure}); rank {rank} opened nothing. "
            "Fix what rank 0 reports (its own traceback says more) and start the job again")
    # (a URL's part is the key prefix URL/__rank<r>, with the URL's storage_options)
    part = part_location(path, rank)
    return part, opener(part, part_of=rank)
