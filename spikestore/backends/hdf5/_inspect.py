"""What an HDF5 store holds, read from its own metadata: for damage checks and ``verify``.

One job: look at the file without trusting it. :func:`inspect` says what is
at a path (a group and its members, or a dataset and how its shape, chunks,
dtype and filter pipeline disagree with what the stream document says,
``docs/format.md`` §10.1-§10.2); the backend runs it under its file's lock
(``HDF5Backend.inspect``).

``verify`` reads a file that no writer has open through :class:`FileView`,
not through the backend: the backend opens files as a SWMR reader, and a
SWMR reader retries every metadata read that fails its checksum for about a
second (a live writer may be rewriting it), so a damaged or truncated file
took a second or two per unreadable B-tree. Without a writer nothing can
change under the reader, so the view opens the file without SWMR (one
attempt per read) and reads a truncated file as HDF5 would see it extended
with zeros (:class:`~spikestore.backends.hdf5._superblock.RecoveredView`),
so each unreadable object fails at once. :func:`open_for_verify` picks the
view or the backend and reports what the superblock alone shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5z

from spikestore._format import ATTRS_KEY
from spikestore.backends._base import ArraySpec, NodeInfo
from spikestore.backends.hdf5._links import get_node
from spikestore.backends.hdf5._superblock import RecoveredView, Superblock
from spikestore.errors import FormatError, InvalidArgumentError

__all__ = ["FileView", "inspect", "open_for_verify"]

_ATTR = ATTRS_KEY.encode()


def inspect(f: h5py.File, store: Path, node: str, expect: ArraySpec | None = None,
            length: int = 0) -> NodeInfo | None:
    """What ``f`` (the file of ``store``) holds at ``node`` (see :meth:`spikestore.backends.Backend.inspect`)."""
    obj = get_node(f, node, store)
    if obj is None:
        return None
    if isinstance(obj, h5py.Group):
        return NodeInfo("group", True, bool(h5a.exists(obj.id, _ATTR)), tuple(obj.keys()))
    if expect is None:
        return NodeInfo("array")
    if not isinstance(obj, h5py.Dataset):
        return NodeInfo("array", problems=(f"it is a {type(obj).__name__}, not a dataset",))
    return NodeInfo("array", problems=tuple(_dataset_problems(obj, expect, length)))


def _dataset_problems(d: h5py.Dataset, expect: ArraySpec, length: int) -> list[str]:
    """How a dataset disagrees with the array a stream document describes (format.md §10.1)."""
    record = tuple(expect.record_shape)
    problems = []
    if d.shape[1:] != record:
        problems.append(f"shape {list(d.shape)} holds records of shape {list(d.shape[1:])}, the document "
                        f"says {list(record)}")
    elif d.shape[0] < length:
        problems.append(f"it holds {d.shape[0]} records, the document commits {length}")
    chunks = (expect.chunk_records, *(max(1, n) for n in record))
    if d.chunks != chunks:
        problems.append(f"chunks {d.chunks} differ from the document's {chunks}")
    maxshape = (None, *(None if n == 0 else n for n in record))
    if d.maxshape != maxshape:
        problems.append(f"maxshape {d.maxshape} differs from {maxshape}")
    if d.dtype != np.dtype(expect.dtype):
        problems.append(f"dtype {d.dtype} differs from the document's {np.dtype(expect.dtype)}")
    problem = _filter_problem(d, expect)
    if problem is not None:
        problems.append(problem)
    return problems


def _filter_problem(d: h5py.Dataset, expect: ArraySpec) -> str | None:
    """How the dataset's filter pipeline differs from what decodes the document's codec, or ``None``."""
    try:
        want = expect.codec.hdf5_filters()
    except InvalidArgumentError as exc:
        return f"the document's codec {expect.codec.config} has no HDF5 filter pipeline ({exc})"
    plist = d.id.get_create_plist()
    got = [plist.get_filter(i)[::2] for i in range(plist.get_nfilters())]  # (id, cd_values)
    wanted = [(want["compression"], tuple(want.get("compression_opts", ())))]
    if want.get("fletcher32"):
        wanted.append((h5z.FILTER_FLETCHER32, ()))
    same = [g[0] for g in got] == [w[0] for w in wanted] and all(
        _same_values(g[1], w[1]) for g, w in zip(got, wanted, strict=True))
    if same:
        return None
    return f"filters {got} differ from {wanted}, what the document's codec {expect.codec.config} needs"


def _same_values(got: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    """Whether a filter's stored cd_values hold the ones asked for; a 0 asked for is one the filter
    fills in itself when the dataset is created (Blosc's first four: version, type and chunk sizes)."""
    return all(v == 0 or (k < len(got) and got[k] == v) for k, v in enumerate(wanted))


class FileView:
    """Read-only access for ``verify`` to an HDF5 store that no writer has open.

    The read half of the backend protocol (documents, chunks, :meth:`inspect`)
    over the file opened without SWMR through a
    :class:`~spikestore.backends.hdf5._superblock.RecoveredView`: one attempt
    per metadata read, and a truncated file reads as zeros past its end.
    Chunks are read exactly as :class:`~spikestore.backends.hdf5.HDF5Backend`
    reads them (``read_direct_chunk``; a chunk HDF5 has no address for is missing).

    Parameters
    ----------
    path
        The file.
    sb
        Its superblock (:meth:`Superblock.read`).
    """

    writable = False
    concurrent_writes = False
    codec_target = "hdf5"

    def __init__(self, path: Path, sb: Superblock) -> None:
        self.path = Path(path)
        self._view = RecoveredView(self.path, sb)
        try:
            self._file = h5py.File(self._view, "r")
        except BaseException:
            self._view.close()
            raise

    def exists(self) -> bool:
        return bool(h5a.exists(self._file.id, _ATTR))

    def read_doc(self, node: str) -> Any | None:
        obj = get_node(self._file, node, self.path)
        if obj is None or not h5a.exists(obj.id, _ATTR):
            return None
        value = obj.attrs[ATTRS_KEY]
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if not isinstance(value, (str, bytes)):
            raise FormatError(f"attribute {ATTRS_KEY!r} of /{node} is not a string")
        return json.loads(value)

    def read_chunk(self, node: str, chunk: int) -> bytes | None:
        d = get_node(self._file, node, self.path)
        if not isinstance(d, h5py.Dataset) or d.chunks is None:
            return None
        row = chunk * d.chunks[0]
        if row >= d.shape[0]:
            return None
        offset = (row, *(0 for _ in d.shape[1:]))
        if d.id.get_chunk_info_by_coord(offset).byte_offset is None:
            return None
        mask, data = d.id.read_direct_chunk(offset)
        if mask:
            raise FormatError(f"{self.path}: chunk {chunk} of {node!r} skips filters (mask {mask:#x})")
        return bytes(data)

    def inspect(self, node: str, expect: ArraySpec | None = None, length: int = 0) -> NodeInfo | None:
        return inspect(self._file, self.path, node, expect, length)

    def close(self) -> None:
        self._file.close()
        self._view.close()


def open_for_verify(path: Path) -> tuple[FileView | None, list[str]]:
    """The view ``verify`` reads an HDF5 store through, and what its superblock alone shows is wrong.

    A file no writer has open (superblock flags clear) is read through a
    :class:`FileView`, and one that ends before the end of allocation its
    superblock records is reported truncated. A file a writer has open (or
    was killed with open: such a file may legitimately end early) is read by
    the backend, as readers read it.

    Returns
    -------
    (view, problems)
        ``view`` is ``None`` when the backend should read the file, or, with
        problems, when it cannot be read at all.
    """
    try:
        sb = Superblock.read(path)
    except FormatError as exc:
        return None, [str(exc)]
    if sb is None or sb.flags:  # not an HDF5 file of this format, or a writer has it (or died)
        return None, []
    problems = []
    size = path.stat().st_size
    if size < sb.eoa:
        problems.append(f"{path}: the file is truncated: it has {size} bytes, its superblock says "
                        f"{sb.eoa} (HDF5 refuses to open it). What lay past byte {size} is lost, as after "
                        "an interrupted copy or a full disk: restore the file from a copy if there is one")
    return FileView(path, sb), problems
