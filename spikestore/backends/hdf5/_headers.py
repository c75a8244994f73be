"""Group object headers with room to grow, so that structure windows change them in place.

One job: create the file and its groups so that a structure window (see
:mod:`spikestore.backends.hdf5._backend`) rewrites existing objects in place.
Outside SWMR, HDF5 writes a flush's entries in no particular order. A group
whose header is full gets a continuation chunk in new space when a link or a
bigger document is added, and a writer killed between the write of the old
header (which now points at the chunk) and the write of the chunk loses the
whole group: every committed record of a stream, or the store's root. With
headers created large enough (``H5Pset_est_link_info``, links kept compact
by ``H5Pset_link_phase_change``), adding a link or replacing a document
changes one header chunk, which HDF5 writes in one ``pwrite``, so a kill
leaves either the old or the new header. A header that outgrows even that
room (a stream of several hundred segments, a document over ~8 KiB) gets a
continuation chunk as before.

New objects are the other half (:func:`create_node`): an existing group that
links to a new object whose header HDF5 has not written yet is as broken, so
new objects are written, unlinked, before the link that publishes them.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
from h5py import h5f, h5g, h5p

from spikestore._format import ATTRS_KEY
from spikestore.backends.hdf5._native import hdf5_library

__all__ = ["LINK_ROOM", "create_file", "create_node", "new_group", "put_document", "require_group"]

#: Links each header is sized for (about 27 bytes each): the root holds the
#: quantities and the root document, a quantity group its streams, a stream
#: group its index and segment arrays and its document (4 KiB at first, and
#: room to replace it by one of 8 KiB in place).
LINK_ROOM = {0: 512, 1: 256, 2: 384}
_NAME_BYTES = 12
#: Links stay in the header (compact storage) up to this many.
_MAX_COMPACT = 1000


def _sized(plist: Any, depth: int) -> Any:
    lib = hdf5_library()
    if lib is not None:
        pid = ctypes.c_int64(plist.id)
        lib.H5Pset_link_phase_change(pid, ctypes.c_uint(_MAX_COMPACT), ctypes.c_uint(_MAX_COMPACT - 100))
        lib.H5Pset_est_link_info(pid, ctypes.c_uint(LINK_ROOM[min(depth, 2)]), ctypes.c_uint(_NAME_BYTES))
    return plist


def create_file(path: Path, libver: tuple[str, str]) -> h5py.File:
    """Create ``path`` (which must not exist) read-write, without HDF5's file locking."""
    fapl = h5p.create(h5p.FILE_ACCESS)
    bounds = {"v110": h5f.LIBVER_V110}
    fapl.set_libver_bounds(bounds[libver[0]], bounds[libver[1]])
    fapl.set_file_locking(False, True)
    fcpl = _sized(h5p.create(h5p.FILE_CREATE), 0)
    return h5py.File(h5f.create(os.fsencode(path), h5f.ACC_EXCL, fapl=fapl, fcpl=fcpl))


def new_group(f: h5py.File, depth: int) -> h5py.Group:
    """An anonymous group with a sized header, to be linked at ``depth`` (1: quantity, 2: stream)."""
    return h5py.Group(h5g.create(f.id, None, gcpl=_sized(h5p.create(h5p.GROUP_CREATE), depth)))


def require_group(f: h5py.File, node: str) -> h5py.Group | None:
    """The group at ``node`` if it exists (every level a group), else None."""
    try:
        group = f[node]
    except KeyError:
        return None
    return group if isinstance(group, h5py.Group) else None


def create_node(f: h5py.File, node: str, make: Callable[[int], Any]) -> None:
    """Create ``node`` (and missing groups above it), written before anything existing points to it.

    ``make(depth)`` returns the new object, anonymous. Every new object is
    created unlinked (or linked only inside other new objects), the file is
    flushed, and only then is the topmost one linked into its existing
    parent: a writer killed in between leaves unreachable space, never an
    existing group that points at bytes not yet written.
    """
    parts = node.split("/")
    parent = f["/"]
    i = 0
    while i < len(parts) - 1 and parts[i] in parent:
        parent = parent[parts[i]]
        i += 1
    obj = make(len(parts))
    top = obj
    if i < len(parts) - 1:  # missing groups between the deepest existing one and the node
        top = inner = new_group(f, i + 1)
        for j in range(i + 1, len(parts) - 1):
            h5g.create(inner.id, parts[j].encode(), gcpl=_sized(h5p.create(h5p.GROUP_CREATE), j + 1))
            inner = inner[parts[j]]
        inner[parts[-1]] = obj
    f.flush()
    parent[parts[i]] = top


def put_document(f: h5py.File, node: str, value: Any) -> None:
    """Create or replace the document attribute of ``node`` (``""``: the root) in a structure window.

    A new stream's group is written with its document before it is linked
    (:func:`create_node`); a document that outgrew its room is deleted
    first, so the bigger one can take that room in the header.
    """
    group = require_group(f, node) if node else f["/"]
    if group is None:
        def make(depth: int) -> h5py.Group:
            new = new_group(f, depth)
            new.attrs.create(ATTRS_KEY, value)
            return new

        create_node(f, node, make)
        return
    if ATTRS_KEY in group.attrs:
        del group.attrs[ATTRS_KEY]
    group.attrs.create(ATTRS_KEY, value)
