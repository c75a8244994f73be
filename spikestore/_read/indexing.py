"""Which records a key picks: ``s[...]`` and ``s.sel(step=...)`` turned into record positions.

Pure index arithmetic on numpy arrays, apart from the stream that reads the
records, so the rules (negative positions, boolean masks, steps with several
records, inclusive step slices) live in one place and each error says what
to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from spikestore.errors import InvalidArgumentError, RecordIndexError

__all__ = ["inside", "is_position", "position", "positions", "step_positions"]


def is_position(item: Any) -> bool:
    """Whether ``item`` picks one record (an int), rather than several."""
    return isinstance(item, (int, np.integer))


def inside(records: Callable[[Any], np.ndarray], item: tuple[Any, ...]) -> np.ndarray:
    """``s[i, ...]``: the records ``item[0]`` picks (through ``records``), then ``item[1:]`` inside them."""
    if not item:
        return records(slice(None))
    head, rest = item[0], item[1:]
    recs = records(head)
    return recs[rest] if is_position(head) else recs[(slice(None), *rest)]


def position(i: int, n: int, key: str) -> int:
    """Record ``i`` of a stream of ``n`` records (``-1`` the last), checked."""
    j = int(i) + n if int(i) < 0 else int(i)
    if not 0 <= j < n:
        raise RecordIndexError(f"record {i} out of range for stream {key!r} with {n} records")
    return j


def positions(item: Any, n: int, key: str) -> np.ndarray:
    """Positions (int64, in the order asked) that a slice, an int array or a boolean mask picks."""
    if isinstance(item, slice):
        return np.arange(n, dtype=np.int64)[item]
    idx = np.asarray(item)
    if idx.dtype == np.bool_:
        if idx.shape != (n,):
            raise InvalidArgumentError(f"a boolean mask over stream {key!r} needs {n} entries, not {idx.shape}")
        return np.flatnonzero(idx)
    if idx.dtype.kind not in "iu":
        raise InvalidArgumentError(f"index records with ints, slices or int/bool arrays, not {item!r}")
    idx = idx.reshape(-1).astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)][0]
        raise RecordIndexError(f"record {bad} out of range for stream {key!r} with {n} records")
    return np.where(idx < 0, idx + n, idx)


def step_positions(steps: np.ndarray, calls: np.ndarray, step: Any, call: int | None, key: str, *,
                   where: np.ndarray | None = None, what: str = "") -> int | np.ndarray:
    """Positions of the records :meth:`Stream.sel <spikestore.Stream.sel>` picks.

    An int ``step`` gives the position of its one record (an int); a list or
    array of steps, or a slice of steps with both ends included, gives every
    matching position (an array, in record order). ``call`` keeps only
    records with that order within their step; ``where`` (a mask over the
    records, named ``what`` in errors) only the records it marks.
    """
    if where is not None:
        mine = np.flatnonzero(where)
        if not len(mine):
            raise InvalidArgumentError(f"stream {key!r} has no records of {what}")
        got = step_positions(steps[mine], calls[mine], step, call, key)
        return int(mine[got]) if isinstance(got, int) else mine[got]
    if isinstance(step, slice):
        if step.step not in (None, 1):
            raise InvalidArgumentError("sel(step=slice(a, b)) takes no stride; index the result instead")
        mask = np.ones(len(steps), bool)
        if step.start is not None:
            mask &= steps >= step.start
        if step.stop is not None:
            mask &= steps <= step.stop
    elif np.ndim(step) == 0:
        match = np.flatnonzero(steps == int(step))
        if call is not None:
            match = match[calls[match] == call]
        if len(match) == 1:
            return int(match[0])
        what = f"step {int(step)}" + ("" if call is None else f", call {call}")
        if len(match) == 0:
            span = f"{int(steps.min())}..{int(steps.max())}" if len(steps) else "none"
            raise InvalidArgumentError(
                f"stream {key!r} has no record at {what} (its steps: {span}); "
                "check s.steps for the steps it holds")
        raise InvalidArgumentError(
            f"stream {key!r} has {len(match)} records at {what} (calls {calls[match].tolist()}); "
            f"pick one with call=..., or pass step=[{int(step)}] to get them all stacked")
    else:
        mask = np.isin(steps, np.asarray(step))
    if call is not None:
        mask &= calls == call
    return np.flatnonzero(mask)
