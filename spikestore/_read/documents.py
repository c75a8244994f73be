"""Reading a store's JSON documents back, checked: :func:`load_doc` and its neighbours.

The one way spikestore reads a document (the reader, ``verify`` and
``Store(mode="a")``): through the store's backend, then its JSON Schema and
consistency checks (:mod:`spikestore._format`), and the rules of
``docs/format.md`` §2-§3 for a group without a document. What the backend
raises is sorted by :func:`spikestore._failures.classify`: storage that
fails is raised as it is, anything else about the document is damage.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

from spikestore._failures import Failure, classify, is_storage, storage_error
from spikestore._format import (
    ATTRS_KEY,
    damaged,
    document_problems,
    stream_node,
    unbounded_stream_node,
)
from spikestore.backends import Backend, StoreURL
from spikestore.errors import DamagedStoreError, SpikestoreError

__all__ = ["check_no_root", "doc_location", "has_root", "load_doc", "load_stream_doc", "not_a_store_file",
           "writer_live"]


def doc_location(store: Path | StoreURL, node: str) -> str:
    """Where the document of group ``node`` lives, for messages: a ``zarr.json`` or an HDF5 attribute."""
    # A Zarr store is a folder or a prefix of keys, an HDF5 store a file (format.md §1, §10).
    if isinstance(store, StoreURL) or store.is_dir():
        return str(store / node / "zarr.json") if node else str(store / "zarr.json")
    return f"{store}, group /{node}, attribute {ATTRS_KEY!r}"


def not_a_store_file(path: Path) -> str | None:
    """Why the local ``path`` cannot be a store (it is a FIFO, a device...), or ``None``.

    A store is a folder (Zarr) or a regular file (HDF5), reached through
    links or not: anything else is refused before a library opens it (an
    HDF5 library opening a FIFO waits for a writer for ever).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # (the opening that follows says what is wrong)
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    what = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "no file")
    return f"{path} is {what}, not a store (a store is a folder or an HDF5 file)"


def load_doc(backend: Backend, node: str, kind: str, key: str | None = None) -> dict[str, Any] | None:
    """The document of group ``node`` of an opened store, read and checked.

    Parameters
    ----------
    backend
        The store's backend (``read_doc`` and ``inspect`` are used).
    node
        The group (``""``: the root).
    kind
        ``"root"`` or ``"stream"``.
    key
        For a stream, the key the root lists it under (the document must name it).

    Returns
    -------
    dict or None
        The document; ``None`` when the group holds none and nothing shows it ever did:
        the root of something that is not a spikestore store, or a stream listed but
        not committed yet (its group absent, or empty).

    Raises
    ------
    DamagedStoreError
        For a document that cannot be read or parsed, breaks its schema or contradicts
        itself, and for a group that lost its document. The message names the file.
    FormatError
        For a root document of a newer format version.
    StorageError, ReadOnlyError, StoreNotFoundError
        When the storage fails rather than the document: raised as the backend raised them.
    """
    where = doc_location(backend.path, node)
    try:
        doc = backend.read_doc(node)
        if doc is None:
            _check_absent(backend, node, kind, where)
            return None
    except Exception as exc:  # noqa: BLE001 - classified: what is not damage is raised again
        failure = _unless_damage(exc, where)
        what = str(exc) if failure is Failure.DAMAGE else f"it cannot be read ({type(exc).__name__}: {exc})"
        raise damaged(backend.path, where, what) from None
    problems = document_problems(doc, kind, where, key)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise damaged(backend.path, where, "; ".join(problems[:3]) + more)
    checked: dict[str, Any] = doc  # (its schema says: an object)
    return checked


def _unless_damage(exc: Exception, where: str) -> Failure:
    """Raise ``exc`` unless it says the document at ``where`` is damaged; what it says otherwise.

    Damage already named (:class:`DamagedStoreError`) and every error that is
    not about the document (a closed run, storage that failed, a bug) are
    raised as they are; a raw storage failure of the backend's library as a
    :class:`~spikestore.errors.StorageError` or
    :class:`~spikestore.errors.ReadOnlyError` with its ``errno``.
    """
    failure = classify(exc)
    if isinstance(exc, DamagedStoreError):
        raise exc
    if is_storage(exc) and not isinstance(exc, SpikestoreError):
        raise storage_error(exc, f"{where} cannot be read: {exc} (not damage: the store may be intact)",
                            writing=False) from exc
    if failure in (Failure.DAMAGE, Failure.UNREADABLE) or (failure is Failure.MISSING
                                                            and not isinstance(exc, SpikestoreError)):
        return failure
    raise exc


def _check_absent(backend: Backend, node: str, kind: str, where: str) -> None:
    """Raise when group ``node`` has no document but shows that it had one (format.md §2, §3)."""
    if kind == "root":
        check_no_root(backend)
        return
    info = backend.inspect(node)
    if info is None:
        return
    if info.doc:
        raise damaged(backend.path, where, "the document is there but cannot be read")
    if info.members:
        raise damaged(backend.path, where, f"it is missing, but the group holds {', '.join(info.members)}: "
                      "the stream was committed (its document is written before any of its arrays)")


def has_root(backend: Backend) -> bool:
    """Whether the store has a root document (``backend.exists()``); damage when its root cannot be read.

    Storage that fails, and a store that is not there (a bucket that does
    not exist), are raised as they are: they say nothing about the store.
    """
    try:
        return bool(backend.exists())
    except Exception as exc:  # noqa: BLE001 - classified: what is not damage is raised again
        _unless_damage(exc, doc_location(backend.path, ""))
        raise damaged(backend.path, doc_location(backend.path, ""),
                      f"the root group cannot be read ({type(exc).__name__}: {exc})") from None


def check_no_root(backend: Backend) -> None:
    """For a store without a root document: raise when it lost one, return when it never had one.

    A root whose metadata is missing altogether (no ``zarr.json``) while it holds
    Zarr groups lost it; a root with metadata but no document, or a file that
    cannot be read at all, is not a spikestore store.

    Raises
    ------
    DamagedStoreError
        Naming the missing file.
    StorageError, ReadOnlyError
        When the storage fails: no answer about the store either.
    """
    where = doc_location(backend.path, "")
    try:
        info = backend.inspect("")
        if info is not None and info.doc:
            raise damaged(backend.path, where, "the root document is there but cannot be read")
        groups = [] if info is None or info.meta else [m for m in info.members if _lost_group(backend, m)]
    except DamagedStoreError:
        raise
    except Exception as exc:
        if is_storage(exc) or classify(exc) in (Failure.INTERRUPT, Failure.OTHER):
            raise
        return  # nothing readable there: not a store
    if groups:
        raise damaged(backend.path, where, f"it is missing, but the store holds groups {', '.join(groups)}")


def _lost_group(backend: Backend, node: str) -> bool:
    """Whether ``node`` is a group a lost root would leave: metadata without a document of its own
    (a quantity's group). A member with a root document is a store of its own (a folder of stores)."""
    info = backend.inspect(node)
    return info is not None and info.meta and not info.doc


def load_stream_doc(backend: Backend, key: str, writer: dict[str, Any] | None = None
                    ) -> tuple[str, dict[str, Any] | None]:
    """Where stream ``key``'s group is, and its checked document: ``(node, doc)``.

    Looks at :func:`~spikestore._format.names.stream_node`, then at
    :func:`~spikestore._format.names.unbounded_stream_node` (an HDF5 store may
    hold a layer name over 255 bytes unbounded); gives ``(stream_node(key), None)``
    for a stream listed but not committed yet. Raises as :func:`load_doc`.

    ``writer`` is the root document's writer status: given, a listed stream
    without a document is damage unless that writer may still be creating
    it (:func:`writer_live`). The writer creates a stream's group and
    document before it lists the stream (``docs/format.md`` §3.2), so once
    it is gone such a stream lost its group: its records are lost, never
    0 records.
    """
    node = stream_node(key)
    doc = load_doc(backend, node, "stream", key)
    unbounded = unbounded_stream_node(key)
    if doc is None and unbounded is not None:
        found = load_doc(backend, unbounded, "stream", key)
        if found is not None:
            return unbounded, found
    if doc is None and writer is not None and not writer_live(writer):
        state = "closed" if writer.get("status") == "closed" else (
            "failed" if writer.get("status") == "failed" else "gone (its process no longer runs)")
        raise damaged(backend.path, doc_location(backend.path, node),
                      f"the root document lists stream {key!r}, but its group is missing or holds no document, "
                      f"and its writer is {state}: the stream's records are lost (the writer creates a stream's "
                      "group before it lists the stream)")
    return node, doc


def writer_live(writer: dict[str, Any]) -> bool:
    """Whether the writer a root document's ``writer`` status describes may still be writing.

    ``closed`` and ``failed`` are final. An ``open`` writer is live unless it
    ran on this host (``host`` is this machine's name) and its process
    (``pid``) no longer exists: a writer killed before it closed. A writer on
    another host is taken as live, since nothing here can tell.
    """
    if writer.get("status") != "open":
        return False
    pid, host = writer.get("pid"), writer.get("host")
    if host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # (another user's process: it exists)
    return True


