"""What a writer does to the store on disk when it opens: :func:`open_for_writing`.

It takes the writer lock before anything else. Then ``mode="w"`` clears the
path (only with ``overwrite=True``); ``mode="a"`` reads the root and stream
documents back, so the writer continues each stream where it stopped and
the steps after the last recorded one. Whatever fails undoes what was
opened, and what the operating system refused becomes a ``SpikestoreError``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikestore._format import FORMAT_VERSION, RANKED_FORMAT_VERSION, new_root_doc, stream_node
from spikestore._read.documents import check_no_root, has_root, load_doc, load_stream_doc
from spikestore._read.reader import read_index_tail
from spikestore._write.lease import LeasedWriterLock, NoWriterLock
from spikestore._write.lock import WriterLock, cannot_write
from spikestore._write.root import RootDocument
from spikestore._write.writer import Writer
from spikestore.backends import Backend, Location, StoreURL, backend_name_for, clear_for_new_url, open_backend
from spikestore.errors import FormatError, SpikestoreError, StoreExistsError, StoreNotFoundError

__all__ = ["Opened", "clear_for_new", "open_for_writing", "resume"]


@dataclass
class Opened:
    """What a :class:`~spikestore.Store` owns once open: the lock, backend, root document and writer."""

    lock: WriterLock | LeasedWriterLock | NoWriterLock
    backend: Backend
    root: RootDocument
    writer: Writer
    streams: dict[str, dict[str, Any]]
    step: int


def _raise_open_error(exc: BaseException, path: Path | StoreURL) -> None:
    """Raise what the OS refused while a store was opened as a SpikestoreError (else return)."""
    if isinstance(exc, OSError) and not isinstance(exc, SpikestoreError):
        raise cannot_write(exc, path, "creating or resuming its files") from exc


def open_for_writing(path: Path | StoreURL, mode: str, *, overwrite: bool, backend: str | None,
                     root_doc: dict[str, Any] | None, metadata: dict[str, Any] | None, lock: bool,
                     durable: bool, writer_options: dict[str, Any], ranks: list[int] | None = None,
                     part_of: int | None = None) -> Opened:
    """Take the writer lock, then create (``root_doc``, mode ``"w"``) or resume the store; start its writer.

    One writer per store: nothing on disk is created, replaced or deleted
    before the lock is held, and a failure releases it again. ``ranks``
    (rank 0 of a process group of two or more) are listed in the root;
    ``part_of`` marks the store as that rank's part.
    """
    folder = backend_name_for(path, backend) == "zarr"
    held = writer_lock(path, lock, folder=folder)
    held.acquire(create=mode == "w")
    try:
        if mode == "w":
            clear_for_new(path, overwrite, keep_folder=folder)
        guard = held.check if isinstance(held, LeasedWriterLock) else None
        be = open_backend(path, backend=backend, writable=True, durable=durable, guard=guard)
    except BaseException as exc:
        held.release()
        _raise_open_error(exc, path)
        raise
    try:
        held.hold_store()  # a store created (or replaced) just now: the lock moves to it
        streams: dict[str, dict[str, Any]] = {}
        step = 0
        if root_doc is not None:
            root = RootDocument(be, root_doc)
        else:
            root, streams, step = resume(be, path, metadata)
        if ranks is not None:
            root.include_ranks(ranks)
        if part_of is not None:
            root.mark_part(part_of)
        root.write()
        writer = Writer(be, root, streams=streams, **writer_options)
    except BaseException as exc:
        try:
            be.close()
        finally:
            held.release()
        _raise_open_error(exc, path)
        raise
    return Opened(held, be, root, writer, streams, step)


def clear_for_new(path: Path | StoreURL, overwrite: bool, *, keep_folder: bool = False) -> None:
    """Make way for a new store at ``path``: refuse a non-empty one unless ``overwrite``.

    Called with the writer lock held, which covers the store at ``path``: a
    store another writer holds was refused before anything here runs. With
    ``keep_folder`` (a Zarr store) a folder at ``path`` is emptied, not
    removed: the folder itself carries the writer lock, held by this writer.
    """
    if isinstance(path, StoreURL):  # object storage: no folder, only keys under a prefix
        clear_for_new_url(path, overwrite)
        return
    if path.exists() and (path.is_file() or any(path.iterdir())):
        if not overwrite:
            raise StoreExistsError(
                f"{path} already exists and is not empty; pass overwrite=True to replace it, "
                "or mode='a' to append to it")
        if path.is_dir() and keep_folder:
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def resume(be: Backend, path: Path | StoreURL, metadata: dict[str, Any] | None
           ) -> tuple[RootDocument, dict[str, dict[str, Any]], int]:
    """The root document, the committed stream documents, and the step to continue at.

    A writer that died left ``status: "open"``; it holds no lock any more
    (ours is taken), so its store is resumed as it is. Documents are read
    as every reader reads them (:func:`~spikestore._read.documents.load_doc`): a
    damaged one raises ``DamagedStoreError`` before anything is written.
    """
    root = load_doc(be, "", "root") if has_root(be) else None
    if root is None:
        check_no_root(be)  # raises DamagedStoreError when the root lost its document
        raise StoreNotFoundError(f"no spikestore store at {path}; use mode='w' to create one")
    streams: dict[str, dict[str, Any]] = {}
    last_step = -1
    for key in root["streams"]:
        node, doc = load_stream_doc(be, key)
        if doc is None:
            continue
        if node != stream_node(key):
            raise FormatError(
                f"{path}: stream {key!r} is stored under a group name longer than 255 bytes (not "
                "bounded, docs/format.md §1.1); spikestore.open reads it, but appending to it is not "
                "supported: record into a new store")
        streams[key] = doc
        last_step = max(last_step, read_index_tail(be, node, doc))
    if metadata:
        root["metadata"] = {**root["metadata"], **metadata}
    # Drop counts add up over writer sessions. New chunks are bound by chunk
    # identities, which readers of format 1 do not know: the store becomes version 2.
    kept = {k: root["writer"][k] for k in ("dropped", "modified") if k in root["writer"]}
    root["writer"] = new_root_doc(None)["writer"] | kept
    root["format_version"] = RANKED_FORMAT_VERSION if "ranks" in root else FORMAT_VERSION
    return RootDocument(be, root), streams, last_step + 1


def writer_lock(store: Location, lock: bool, *, folder: bool = False
                ) -> WriterLock | LeasedWriterLock | NoWriterLock:
    """The writer lock of ``store``: :class:`WriterLock` for a local path, :class:`LeasedWriterLock` for a URL.

    ``lock=False`` (a URL only) gives :class:`NoWriterLock`.

    Raises
    ------
    InvalidArgumentError
        ``lock=False`` for a local path, where the lock always works.
    """
    from spikestore.errors import InvalidArgumentError

    if not isinstance(store, StoreURL):
        if not lock:
            raise InvalidArgumentError(
                f"lock=False applies to stores behind a URL only; {store} is local, where the writer lock "
                "always works: drop lock=False")
        return WriterLock(store, folder=folder)
    return LeasedWriterLock(store) if lock else NoWriterLock(store)
