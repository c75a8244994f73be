"""Reach an object of a store's HDF5 file through hard links only.

One job: never let a link lead a reader out of the store. spikestore
writes nothing but hard links; a soft link or an external link in a store
was put there by something else, and following it would read another
object, or another file altogether, as if it were this store's data. Every
lookup of a node by its path (documents, arrays, sizes, ``verify``) walks
the path here, link by link, and refuses any link that is not hard as
damage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
from h5py import h5l

from spikestore._format.documents import damaged

__all__ = ["get_node"]


def get_node(f: h5py.File, node: str, store: Path) -> Any | None:
    """The object at ``node`` (``""``: the root group); ``None`` when no link leads there.

    Raises
    ------
    DamagedStoreError
        When a link on the way is a soft or an external link: it names the
        link and where it points.
    """
    obj: Any = f
    walked = ""
    for name in node.split("/") if node else ():
        walked = f"{walked}/{name}"
        key = name.encode()
        if not isinstance(obj, h5py.Group) or not obj.id.links.exists(key, None):
            return None
        kind = obj.id.links.get_info(key).type
        if kind != h5l.TYPE_HARD:
            raise damaged(store, walked, _describe(obj, key, kind))
        obj = obj[name]
    return obj


def _describe(group: h5py.Group, key: bytes, kind: int) -> str:
    """What a link that is not hard is, and why it is not followed."""
    target = group.id.links.get_val(key)
    if kind == h5l.TYPE_SOFT:
        what = f"a soft link to {target.decode(errors='replace')!r}"
    elif kind == h5l.TYPE_EXTERNAL:
        file, path = target
        what = (f"an external link to {path.decode(errors='replace')!r} in the file "
                f"{file.decode(errors='replace')!r}")
    else:
        what = f"a user-defined link (type {kind})"
    return (f"it is {what}; spikestore writes hard links only and follows no other link, which could "
            "lead out of the store: the store was altered after it was written")
