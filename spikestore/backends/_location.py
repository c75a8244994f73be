"""Where a store is: a local ``pathlib.Path``, or a :class:`StoreURL` with its storage options.

:data:`Location` is the type every opener takes once :func:`location` has
read what the user passed (a path, a string, or a URL). A URL is never a
``Path``: ``Path`` would fold ``s3://`` into ``s3:/``, and a prefix of keys
has no folder to ask about.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikestore._format import rank_part
from spikestore.errors import InvalidArgumentError

__all__ = ["Location", "StoreURL", "is_url", "location", "part_location"]


@dataclass(frozen=True, init=False, repr=False)
class StoreURL:
    """A store's URL (``s3://bucket/run.zarr``), with the ``storage_options`` that reach it.

    The options (what zarr's ``FsspecStore.from_url`` and fsspec take) travel
    with the URL, pickling included, so a run pickled into a dask worker, or
    reopened by a monitor's lazy view, reaches the same store; they never
    appear in its text (``str``, ``repr``, messages). Two are equal when URL
    and options are.

    Parameters
    ----------
    url
        The URL; a trailing ``/`` is dropped.
    storage_options
        The options, copied.
    """

    url: str
    storage_options: dict[str, Any] = field(hash=False)

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "url", str(url).rstrip("/"))
        object.__setattr__(self, "storage_options", dict(storage_options or {}))

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"StoreURL({self.url!r})"

    def __truediv__(self, key: str) -> StoreURL:
        """The URL of ``key`` inside the store (a rank's part, a key named in a message), with the same options."""
        return StoreURL(f"{self.url}/{key}", self.storage_options)

    @property
    def name(self) -> str:
        """The last part of the URL's path (``run.zarr``)."""
        return posixpath.basename(self.url.split("://", 1)[1])

    @property
    def suffix(self) -> str:
        """The name's extension (``.zarr``)."""
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        """The name without its extension."""
        return posixpath.splitext(self.name)[0]


#: Where a store is.
Location = Path | StoreURL


def is_url(path: object) -> bool:
    """Whether ``path`` names a store behind a URL (``scheme://...``, other than ``file://``)."""
    if isinstance(path, StoreURL):
        return True
    if not isinstance(path, str) or "://" not in path:
        return False
    scheme = path.split("://", 1)[0]
    return scheme.isidentifier() and scheme.lower() != "file"


def location(path: str | os.PathLike[str] | StoreURL, storage_options: dict[str, Any] | None = None) -> Location:
    """Where a store is: a :class:`StoreURL` for ``scheme://...``, else a ``Path``.

    ``storage_options`` apply to URLs only; a :class:`StoreURL` given
    without them keeps its own.

    Raises
    ------
    InvalidArgumentError
        For ``storage_options`` with a local path.
    """
    if isinstance(path, StoreURL):
        return path if storage_options is None else StoreURL(path.url, storage_options)
    if is_url(path):
        return StoreURL(str(path), storage_options)
    if storage_options is not None:
        raise InvalidArgumentError(
            f"storage_options apply to stores behind a URL (s3://bucket/run.zarr), not to the local path "
            f"{os.fspath(path)!r}; drop storage_options")
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return Path(text)


def part_location(path: Location, rank: int) -> Location:
    """Where rank ``rank``'s part of the run at ``path`` is (``docs/format.md`` §1.2): the root itself
    for rank 0, else its ``__rank<r>`` folder (a key prefix with the same storage options, on object
    storage). The read side, the writer of a process group and ``verify`` all place parts with this."""
    return path if rank == 0 else path / rank_part(rank)
