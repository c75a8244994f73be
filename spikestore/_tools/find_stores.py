"""Where the stores are, for a local path that is not one (``spikestore info``).

A folder of runs (``runs/``) holds stores without being one, and a stream's
folder lies inside one. Opening either as a store fails; these functions say
what the path is instead: the stores a folder holds (:func:`stores_in`) and
the store a path lies inside (:func:`enclosing_store`). Each store costs one
open (its root document) and one stream document per stream: no chunk is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spikestore._format.names import stream_node
from spikestore._read.run import open as open_run
from spikestore.backends import backend_name_for
from spikestore.errors import DamagedStoreError, SpikestoreError, StoreNotFoundError

__all__ = ["Enclosing", "FoundStore", "enclosing_store", "stores_in"]

#: The file a Zarr group's folder holds (docs/format.md §1): a folder with one is a store or lies in one.
_ZARR_GROUP = "zarr.json"


@dataclass(frozen=True)
class FoundStore:
    """One store found under a folder: where it is and what :func:`spikestore.open` sees in it."""

    path: Path
    streams: int | None  #: ``None`` when the store cannot be read
    records: int | None  #: committed records over every stream
    status: str  #: the writer's status (``open``, ``closed``, ``failed``), or why the store cannot be read


@dataclass(frozen=True)
class Enclosing:
    """The store a path lies inside, and the stream whose folder holds the path (``None``: no stream's)."""

    store: Path
    stream: str | None


def _open_summary(path: Path) -> FoundStore | None:
    """What the store at ``path`` holds; ``None`` when nothing there is a spikestore store."""
    try:
        with open_run(path) as run:
            keys = run.streams
            records = sum(len(run[key]) for key in keys)
            return FoundStore(path, len(keys), records, str(run.writer["status"]))
    except StoreNotFoundError:
        return None
    except DamagedStoreError:
        return FoundStore(path, None, None, "damaged (spikestore verify lists the problems)")
    except SpikestoreError as exc:
        return FoundStore(path, None, None, f"unreadable: {exc}")


def _is_candidate(path: Path) -> bool:
    """A Zarr group's folder or an HDF5 file: something :func:`spikestore.open` may open."""
    if path.is_dir():
        return (path / _ZARR_GROUP).is_file()
    return path.is_file() and backend_name_for(path, None) == "hdf5"


def stores_in(folder: Path, depth: int = 2) -> list[FoundStore]:
    """The stores in ``folder`` and in its subfolders down to ``depth`` levels, sorted by path.

    Stores are Zarr folders and HDF5 files (by suffix) that open as stores;
    a store that opens damaged is listed as such. The search looks inside
    neither stores nor other Zarr hierarchies (``folder`` itself included:
    the groups of a store whose root cannot be read are that store's, such
    as the part of each rank), and skips hidden entries. Paths are
    ``folder`` joined with each store's path below it.
    """
    found: list[FoundStore] = []
    if (folder / _ZARR_GROUP).exists():
        return found
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if _is_candidate(entry):
            store = _open_summary(entry)
            if store is not None:
                found.append(store)
        elif depth > 1 and entry.is_dir():
            found += stores_in(entry, depth - 1)
    return found


def enclosing_store(path: Path) -> Enclosing | None:
    """The nearest folder above ``path`` that is a store, with the stream whose folder ``path`` is or is in.

    The store's path is given the way ``path`` is: below the same relative
    start when ``path`` is relative and lies below it. ``None`` when no
    folder above ``path`` is a store.
    """
    absolute = path.absolute()
    for above in absolute.parents:
        if not (above / _ZARR_GROUP).is_file():
            continue
        try:
            with open_run(above) as run:
                inner = absolute.relative_to(above).as_posix()
                stream = next((key for key in run.streams
                               if inner == stream_node(key) or inner.startswith(stream_node(key) + "/")), None)
        except SpikestoreError:
            continue
        depth = len(absolute.relative_to(above).parts)
        shown = path.parents[depth - 1] if depth <= len(path.parents) else above
        return Enclosing(shown, stream)
    return None
