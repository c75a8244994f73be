"""Write to a temporary name, then replace: the one way spikestore publishes a file.

A reader (or a crash) must never see half a file under its final name: the
Zarr backend's documents and chunks, and every exported file, go through
:func:`replacing` or :func:`write_replacing`. On failure the temporary file
is removed, so nothing ``*.partial`` is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from spikestore.errors import InvalidArgumentError

__all__ = ["PARTIAL_SUFFIX", "check_folder", "remove", "replacing", "write_replacing"]

#: Suffix of temporary files and folders (``<name>.<random>.partial``).
PARTIAL_SUFFIX = ".partial"


def _temporary(path: Path, keep_suffix: bool) -> Path:
    # A random part: two writers of one name (a retried export) never share a temporary.
    tail = path.suffix if keep_suffix else ""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}{tail}")


def remove(path: Path) -> None:
    """Delete a file or a folder tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_folder(path: Path) -> None:
    """Raise :class:`~spikestore.errors.InvalidArgumentError` unless ``path``'s folder exists.

    Outputs are never given folders of their own making: a mistyped folder
    is far more likely than one meant to be created.
    """
    if not path.parent.is_dir():
        raise InvalidArgumentError(f"cannot write {path}: the folder {path.parent} does not exist; create it "
                                   "first, or write somewhere else")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, folder: bool = False, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on failure it is removed.

    Parameters
    ----------
    path
        The final name, in a folder that exists (else
        :class:`~spikestore.errors.InvalidArgumentError`). An existing file or
        folder there is replaced only once the new one is complete.
    folder
        Create the temporary path as an empty folder (for outputs that are
        folders, such as a Parquet dataset).
    keep_suffix
        End the temporary name in ``path``'s suffix too (``run.nwb.<random>.partial.nwb``),
        for writers that check it (pynwb warns about other names).
    """
    final = Path(path)
    check_folder(final)
    tmp = _temporary(final, keep_suffix)
    if folder:
        tmp.mkdir(parents=True)
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            # os.replace cannot put anything over a non-empty folder.
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise


def write_replacing(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a plain-``str`` fast path for the writer's hot loop)."""
    tmp = f"{path}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
