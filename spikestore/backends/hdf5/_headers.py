"""Group object headers with room to grow, so that structure windows change them in place.

One job: create the file and its groups so that a structure window (see
:mod:`spikestore.backends.hdf5._backend`) never leaves an existing object
half rewritten. Outside SWMR, HDF5 writes a flush's entries in no particular
order. A group whose header is full gets a continuation chunk in new space
when a link or a bigger document is added, and a writer killed between the
write of the old header (which now points at the chunk) and the write of
the chunk loses the whole group: every committed record of a stream, or
the store's root. So:

- headers are created with room (``H5Pset_est_link_info``, links kept
  compact by ``H5Pset_link_phase_change``): adding a link or replacing a
  document of the same size changes one header chunk, which HDF5 writes in
  one ``pwrite``, so a kill leaves either the old or the new header;
- a group that would outgrow its header (a document that doubles its room,
  a link past the room left) is not grown: :func:`rebuild` writes a copy
  with twice the room, holding the same objects and the new document,
  before its parent's link is switched to it in place. The copy's room
  doubles each time, so a stream of thousands of segments is rebuilt a
  dozen times, never extended;
- new objects (:func:`create_node`) are written, unlinked, before the link
  that publishes them: an existing group that links to an object whose
  header HDF5 has not written yet is as broken.

The root group cannot be replaced (the superblock points at it): it is
created with room for a document of 16 KiB, about 700 streams, and a
root document that outgrows even that gets a continuation chunk.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5f, h5g, h5o, h5p

from spikestore._format import ATTRS_KEY
from spikestore.backends.hdf5._native import hdf5_library

__all__ = ["LINK_ROOM", "create_file", "create_node", "new_group", "put_document", "rebuild", "require_group"]

#: Links each header is sized for at first (a link takes about 27 bytes, see
#: :data:`_LINK_BYTES`): the root holds the quantities and the root document
#: (room for one of 16 KiB), a quantity group its streams, a stream group its
#: index and segment arrays and its document (4 KiB at first). A rebuilt
#: group gets twice its links and its document's room, so these only set
#: where growth starts.
LINK_ROOM = {0: 1536, 1: 256, 2: 384}
_NAME_BYTES = 12
#: Header bytes ``H5Pset_est_link_info`` reserves for a link of a :data:`_NAME_BYTES` name.
_LINK_BYTES = 27
#: Links a header may be sized for: a header chunk holds at most 64 KiB.
_MAX_LINKS = 2300
#: Documents up to this size stay in the header; larger ones are stored
#: apart (HDF5's dense attribute storage: a message holds at most 64 KiB).
_MAX_COMPACT_DOC = 32 << 10
#: Header bytes left free beyond what a change itself takes before it is made in place.
_SLACK = 512
#: Links stay in the header (compact storage) up to this many.
_MAX_COMPACT = 65535  # (the most HDF5 takes: the count is 16 bits)


def _sized(plist: Any, links: int) -> Any:
    lib = hdf5_library()
    if lib is not None:
        pid = ctypes.c_int64(plist.id)
        lib.H5Pset_link_phase_change(pid, ctypes.c_uint(_MAX_COMPACT), ctypes.c_uint(_MAX_COMPACT - 100))
        lib.H5Pset_est_link_info(pid, ctypes.c_uint(links), ctypes.c_uint(_NAME_BYTES))
    return plist


def _room(depth: int) -> int:
    return LINK_ROOM[min(depth, 2)]


def create_file(path: Path, libver: tuple[str, str]) -> h5py.File:
    """Create ``path`` (which must not exist) read-write, without HDF5's file locking."""
    fapl = h5p.create(h5p.FILE_ACCESS)
    bounds = {"v110": h5f.LIBVER_V110}
    fapl.set_libver_bounds(bounds[libver[0]], bounds[libver[1]])
    fapl.set_file_locking(False, True)
    fcpl = _sized(h5p.create(h5p.FILE_CREATE), _room(0))
    return h5py.File(h5f.create(os.fsencode(path), h5f.ACC_EXCL, fapl=fapl, fcpl=fcpl))


def new_group(f: h5py.File, depth: int, links: int | None = None) -> h5py.Group:
    """An anonymous group with a sized header, to be linked at ``depth`` (1: quantity, 2: stream).

    ``links``: how many links (of :data:`_LINK_BYTES`) its header has room
    for; by default :data:`LINK_ROOM`'s for that depth.
    """
    gcpl = _sized(h5p.create(h5p.GROUP_CREATE), _room(depth) if links is None else links)
    return h5py.Group(h5g.create(f.id, None, gcpl=gcpl))


def _free(group: h5py.Group) -> int:
    """Bytes free in the group's header, 0 once it has continuation chunks (it is rebuilt then)."""
    info = h5o.get_info(group.id)
    return int(info.hdr.space.free) if info.hdr.nchunks == 1 else 0


def rebuild(f: h5py.File, node: str, doc: Any = None, *, need: int = 0, omit: str | None = None) -> h5py.Group:
    """Replace the group at ``node`` by a copy with twice the room, written before it is linked.

    The copy links the same objects (hard links: nothing is copied but
    links) and holds the same attributes, or ``doc`` as its document. Its
    header has room for twice the links and twice the document, plus
    ``need`` bytes; ``omit`` names a link it leaves out. The file is
    flushed, then the parent's link is switched to the copy in place, which
    frees the old group: a writer killed before that flush's end leaves one
    whole group or the other.
    """
    old = f[node]
    depth = node.count("/") + 1
    attrs = {name: old.attrs.get_id(name) for name in old.attrs}
    doc_bytes = max([a.get_storage_size() for a in attrs.values()] + [0 if doc is None else doc.nbytes])
    if doc_bytes > _MAX_COMPACT_DOC:
        doc_bytes = 0  # (stored apart: the header holds only where)
    elif 2 * doc_bytes <= _MAX_COMPACT_DOC:
        doc_bytes *= 2  # room for its next doubling in place
    links = max(_room(depth), 2 * len(old)) + (doc_bytes + need + _SLACK) // _LINK_BYTES
    new = new_group(f, depth, min(links, _MAX_LINKS))
    for name in old:
        if name != omit:
            new[name] = old[name]
    for name, attr in attrs.items():
        if name == ATTRS_KEY and doc is not None:
            continue
        value = np.empty(attr.shape, attr.dtype)
        attr.read(value)
        new.attrs.create(name, value)
    if doc is not None:
        new.attrs.create(ATTRS_KEY, doc)
    f.flush()
    if omit is not None and omit in old:
        # Freeing the old group would open what it links to, the half-written
        # group too, and fail: it is kept, unreachable, with its space.
        lib = hdf5_library()
        if lib is None or lib.H5Oincr_refcount(ctypes.c_int64(old.id.id)) < 0:
            raise OSError(f"cannot set aside the half-written group {node}/{omit}")
    parent_node, _, name = node.rpartition("/")
    parent = f[parent_node] if parent_node else f["/"]
    del parent[name]
    parent[name] = new
    return new


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
    if i and (parts[i] in parent or _free(parent) < 2 * _LINK_BYTES + _SLACK):
        # (the root has room for its quantities). A name linked already is a
        # group a killed writer left half written, which callers could not
        # open: it cannot even be unlinked (that opens it), so it is left out.
        parent = rebuild(f, "/".join(parts[:i]), need=2 * _LINK_BYTES, omit=parts[i])
    parent[parts[i]] = top


def put_document(f: h5py.File, node: str, value: Any) -> None:
    """Create or replace the document attribute of ``node`` (``""``: the root) in a structure window.

    A new stream's group is written with its document before it is linked
    (:func:`create_node`). A bigger document (its room doubled) rebuilds
    the group (:func:`rebuild`); the root's, which cannot be rebuilt,
    takes the old one's place in its roomy header.
    """
    group = require_group(f, node) if node else f["/"]
    if group is None:
        def make(depth: int) -> h5py.Group:
            new = new_group(f, depth)
            new.attrs.create(ATTRS_KEY, value)
            return new

        create_node(f, node, make)
        return
    old = group.attrs.get_id(ATTRS_KEY).get_storage_size() if ATTRS_KEY in group.attrs else 0
    if node and (value.nbytes > old or _free(group) < _SLACK):
        rebuild(f, node, value)  # (a document grows by doubling: a dozen rebuilds at most)
        return
    if old:
        del group.attrs[ATTRS_KEY]
    group.attrs.create(ATTRS_KEY, value)
