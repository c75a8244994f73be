"""Record trees: what a monitor may record, and how it is taken apart and put back.

A record is whatever a ``function_on_*`` returns: a leaf (tensor, numpy
array, Python or numpy number, ``None``) or a tuple, list or dict of records.
A store holds flat streams only, so a record is flattened into its leaves,
each written to a sibling stream (the leaf at path ``(0,)`` of quantity
``output`` goes to stream ``output.0/<layer>``, at ``("rate",)`` to
``output.rate/<layer>``), and rebuilt from a structure template on reading.

A named tuple (``collections.namedtuple`` or ``typing.NamedTuple``), such as
the state Norse's neurons return next to their spikes, is a record of its
own kind: its leaves are named by field (Norse's ``(z, LIFFeedForwardState(v,
i))`` goes to ``output.0``, ``output.1.v`` and ``output.1.i``), and it is
rebuilt as the same named tuple class, so ``record[1].v`` reads as it did in
the network. Other subclasses of tuple or list (``torch.return_types``) are
kept and rebuilt as plain tuples and lists.

Everything that walks a record tree lives here, so the writing side, the
reading side and the views agree on one definition of a record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from spikestore.errors import InvalidValueError

__all__ = [
    "KINDS",
    "Path",
    "Template",
    "detach",
    "flatten",
    "is_namedtuple",
    "leaf_kind",
    "leaf_quantity",
    "rebuild",
    "rebuilt_like",
    "same",
]

#: Where a leaf sits in its record: the tuple/list positions, named tuple
#: fields and dict keys leading to it (``()`` for a record that is a single leaf).
Path = tuple[Any, ...]

#: The structure of a record without its leaves: ``("leaf", None)``,
#: ``("tuple" | "list", (template, ...))``, ``("dict", ((key, template), ...))``
#: or ``("namedtuple", (cls, ((field, template), ...)))``. Two records have the
#: same structure exactly when their templates are equal.
Template = tuple[str, Any]

#: Kinds of leaf a store-backed monitor can record, in the order of their
#: stored codes. ``"none"`` (a missing gradient) is written nowhere.
KINDS: tuple[str, ...] = ("none", "tensor", "ndarray", "bool", "int", "float")


def is_namedtuple(x: Any) -> bool:
    """Whether ``x`` is a named tuple (made by ``collections.namedtuple`` or ``typing.NamedTuple``)."""
    return isinstance(x, tuple) and hasattr(type(x), "_fields") and hasattr(type(x), "_make")


def rebuilt_like(x: tuple[Any, ...] | list[Any], items: Iterable[Any]) -> Any:
    """``items`` in a container like ``x``: the same named tuple class, else a plain tuple or list."""
    if is_namedtuple(x):
        return type(x)._make(items)  # type: ignore[union-attr]  # a named tuple class has _make
    return tuple(items) if isinstance(x, tuple) else list(items)


def detach(x: Any) -> Any:
    """Return ``x`` with every tensor in it detached from the autograd graph.

    In-memory monitors keep their records this way, so holding them does not
    keep the graph (and its activations) alive.
    """
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (tuple, list)):
        return rebuilt_like(x, (detach(v) for v in x))
    if isinstance(x, dict):
        return {k: detach(v) for k, v in x.items()}
    return x


def leaf_kind(x: Any) -> str:
    """Kind of a leaf, one of :data:`KINDS`, or ``""`` for a value no store can hold."""
    if x is None:
        return "none"
    if isinstance(x, torch.Tensor):
        return "tensor"
    if isinstance(x, np.ndarray):
        return "ndarray"
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float"
    if isinstance(x, np.generic):
        return "ndarray"
    return ""


def flatten(x: Any, path: Path = ()) -> tuple[Template, list[tuple[Path, Any]]]:
    """Take a record apart.

    Parameters
    ----------
    x
        The record.
    path
        Path of ``x`` within an enclosing record (for the recursion).

    Returns
    -------
    template, leaves
        The record's :data:`Template` and its ``(path, leaf)`` pairs in
        depth-first order, the order :func:`rebuild` consumes them in.

    Raises
    ------
    InvalidValueError
        If a dict key is not a non-empty ``str`` without ``/`` (it becomes
        part of a stream name).
    """
    leaves: list[tuple[Path, Any]] = []
    if isinstance(x, (tuple, list)) and not is_namedtuple(x):
        parts = []
        for i, v in enumerate(x):
            t, sub = flatten(v, (*path, i))
            parts.append(t)
            leaves.extend(sub)
        return ("tuple" if isinstance(x, tuple) else "list", tuple(parts)), leaves
    if is_namedtuple(x) or isinstance(x, dict):
        named = x.items() if isinstance(x, dict) else zip(type(x)._fields, x, strict=True)
        fields = []
        for k, v in named:
            if not isinstance(k, str) or not k or "/" in k:
                raise InvalidValueError(
                    f"dict keys of recorded values must be non-empty str without '/', not {k!r}")
            t, sub = flatten(v, (*path, k))
            fields.append((k, t))
            leaves.extend(sub)
        if isinstance(x, dict):
            return ("dict", tuple(fields)), leaves
        return ("namedtuple", (type(x), tuple(fields))), leaves
    return ("leaf", None), [(path, x)]


def rebuild(template: Template, leaves: Iterator[Any]) -> Any:
    """Put a record back together from its template and its leaves in :func:`flatten` order."""
    kind, body = template
    if kind == "leaf":
        return next(leaves)
    if kind == "dict":
        return {k: rebuild(t, leaves) for k, t in body}
    if kind == "namedtuple":
        cls, fields = body
        return cls._make([rebuild(t, leaves) for _, t in fields])
    items = [rebuild(t, leaves) for t in body]
    return tuple(items) if kind == "tuple" else items


def leaf_quantity(base: str, path: Path) -> str:
    """Quantity of the stream holding the leaf at ``path`` (``output``, ``(1, "max")``: ``output.1.max``)."""
    return ".".join([base, *(str(p) for p in path)])


def same(a: Any, b: Any) -> bool:
    """Whether two records are equal (``==`` on lists of tensors would be ambiguous)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
            and torch.equal(a.detach().cpu(), b.detach().cpu())
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)
