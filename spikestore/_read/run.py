"""``spikestore.open``: lazy, read-only access to a store.

Opening reads the root document only; a stream's document is read when the
stream is first used, and chunks when records are asked for. A reader
believes only the committed ``count`` of each stream, so it can open a store
that a live writer is still appending to (``Run.refresh()`` shows more).

A run is a set of parts (``docs/format.md`` §1.2): a one-process store is a
run of one part; a run recorded by several ranks has one part per rank, rank
``r``'s at :func:`part_location`. Each part is read through its own
:class:`~spikestore._read.reader.StoreReader`, behind the
:class:`~spikestore.backends.Backend` protocol, so Zarr and HDF5 stores read
the same; ``run[key]`` is one :class:`~spikestore._read.stream.Stream` over
every part that has the key.

A run or stream pickled into another process (dask's process and
distributed schedulers) reopens there by path, once per process
(:func:`worker_run`).
"""

from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from spikestore._format import split_key
from spikestore._read.documents import check_no_root, has_root, not_a_store_file
from spikestore._read.reader import StoreReader
from spikestore._read.stream import Stream
from spikestore.backends import Backend, StoreURL, backend_name_for, location, open_backend, part_location
from spikestore.errors import InvalidArgumentError, StoreNotFoundError, StreamNotFoundError

__all__ = ["WORKER_RUNS", "Run", "Stream", "open", "open_runs", "worker_run"]

#: Runs a worker process keeps open for later tasks (least recently used first out).
WORKER_RUNS = 8
_runs: OrderedDict[bytes, Run] = OrderedDict()
_runs_lock = threading.Lock()  # a worker runs several tasks at once, in threads


class Run:
    """A store opened for reading. Use :func:`open`.

    A run recorded by several ranks of a process group (``docs/format.md``
    §1.2) shows every rank's records: ``run[key]`` is the stream over every
    part, and :meth:`rank` is one rank's part alone. ``rank`` (internal)
    opens such a part.
    """

    def __init__(self, path: Path | StoreURL, backend: Backend, backend_name: str | None = None,
                 rank: int | None = None) -> None:
        self.path = path
        self._reader = StoreReader(backend, path, backend_name)
        self._streams: dict[str, Stream] = {}
        self._part_of = rank  # None: the whole run; r: rank r's part alone
        self._parts: dict[int, Run] = {}
        self.refresh()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled into another process (dask's process/distributed schedulers): reopen by path.
        return (_reopen, (self.path, self._reader.backend_name, self._part_of))

    @property
    def ranks(self) -> list[int]:
        """Ranks that recorded this run, sorted: ``[0]`` for a one-process store, ``[r]`` for rank ``r``'s part
        (:meth:`rank`, or the part's folder opened on its own)."""
        if self._part_of is not None:
            return [self._part_of]
        return list(self.doc.get("ranks", [self.doc.get("rank", 0)]))

    def _present(self) -> dict[int, Run]:
        """The parts that exist now, by rank (a rank still opening, or that died first, has none yet)."""
        parts = {}
        for r in self.ranks:
            try:
                parts[r] = self.rank(r)
            except StoreNotFoundError:
                continue
        return parts

    def rank(self, r: int) -> Run:
        """Rank ``r``'s records alone: a plain run of its part (``run.rank(r)[key]``, ``.ranks == [r]``).

        Raises
        ------
        InvalidArgumentError
            If rank ``r`` did not record this run (the message lists the ranks).
        StoreNotFoundError
            If rank ``r`` has not created its part (yet: it is opening, or it
            died before); :meth:`refresh` and ask again.
        """
        if r not in self.ranks:
            raise InvalidArgumentError(f"{self.path} has no rank {r!r}; its ranks are {self.ranks}")
        if self.ranks == [r]:  # a run of one part is that part
            return self
        part = self._parts.get(r)
        if part is None:
            part = self._parts[r] = _open_run(part_location(self.path, r), self._reader.backend_name, r)
        return part

    def refresh(self) -> None:
        """Re-read the metadata to see records committed since opening.

        Streams already handed out (``run[key]``) update in place; arrays
        already returned, and dask/xarray views, keep what they covered.
        """
        self._reader.refresh()
        doc = self._reader.root_doc()
        if doc is None:
            raise StoreNotFoundError(f"{self.path} has no spikestore root document")
        self.doc = doc
        for part in self._parts.values():
            part.refresh()
        for key, s in self._streams.items():
            s.reload(self._stream_parts(key))
        self._reader.clear()  # chunks rewritten since (a partly filled one grows) are read again

    @property
    def streams(self) -> list[str]:
        """Stream keys ``quantity/layer`` in the order they were created (part by part, for several ranks)."""
        return list(dict.fromkeys(k for part in self._present().values() for k in part.doc["streams"]))

    @property
    def quantities(self) -> list[str]:
        """Distinct quantities (``output``, ``v_seq``...) in stream order."""
        return list(dict.fromkeys(split_key(k)[0] for k in self.streams))

    @property
    def layers(self) -> list[str]:
        """Distinct layer names in stream order."""
        return list(dict.fromkeys(split_key(k)[1] for k in self.streams))

    @property
    def metadata(self) -> dict[str, Any]:
        """The run metadata given to ``Store(metadata=...)``."""
        metadata: dict[str, Any] = self.doc["metadata"]
        return metadata

    @property
    def writer(self) -> dict[str, Any]:
        """The writer's status document (``status`` is open, closed or failed)."""
        writer: dict[str, Any] = self.doc["writer"]
        return writer

    @property
    def flight_recorder(self) -> dict[str, Any] | None:
        """The flight recorder's settings and counts (docs/flight-recorder.md), or ``None`` for a store recorded
        without one: ``before``, ``after``, ``max_bytes``, ``checks``, ``shrunk_steps`` (steps the ring's budget
        dropped early), ``ring_peak_bytes``, ``repeats`` and ``unlisted`` (triggers counted, not listed)."""
        doc: dict[str, Any] | None = self.doc.get("flight_recorder")
        return None if doc is None else {k: v for k, v in doc.items() if k != "triggers"}

    @property
    def triggers(self) -> list[dict[str, Any]]:
        """The flight recorder's triggers: ``{"step", "reason", "stream"}`` each (``stream`` ``None`` for
        ``Store.trigger``), by step; empty for a store without a flight recorder.

        In a run of several ranks each rank keeps the window of its own
        triggers only; every trigger then also says its ``"rank"``, and the
        list is ordered by step, then rank (docs/flight-recorder.md §6).
        """
        if self._part_of is not None or len(self.ranks) == 1:
            return [dict(t) for t in (self.doc.get("flight_recorder") or {}).get("triggers", [])]
        out = [t | {"rank": r} for r, part in self._present().items() for t in part.triggers]
        return sorted(out, key=lambda t: (t["step"], t["rank"]))

    def __getitem__(self, key: str) -> Stream:
        self._reader.check()
        s = self._streams.get(key)
        if s is None:
            if key not in self:
                raise StreamNotFoundError(
                    f"{self.path} has no stream {key!r}; streams are: {', '.join(self.streams) or 'none'}")
            recipe = (_stream_in_process, (self.__reduce__(), self.doc["created"], key))
            s = self._streams[key] = Stream(self, key, self._stream_parts(key), recipe, ordered=len(self.ranks) > 1)
        return s

    def _stream_parts(self, key: str) -> list[tuple[int, StoreReader]]:
        """``(rank, reader)`` of every part that has stream ``key``, by rank."""
        return [(r, part._reader) for r, part in self._present().items() if key in part.doc["streams"]]

    def __contains__(self, key: object) -> bool:
        return key in self.streams

    def __iter__(self) -> Iterator[str]:
        return iter(self.streams)

    def __len__(self) -> int:
        return len(self.streams)

    def nbytes(self, key: str | None = None) -> int:
        """Bytes on disk: of the whole store, or of stream ``key`` (see :meth:`Stream.nbytes`)."""
        return self._reader.nbytes("") if key is None else self[key].nbytes()

    def summary(self) -> list[dict[str, Any]]:
        """One row per stream, over every part (see :func:`spikestore._tools.summary.summarize`)."""
        from spikestore._tools.summary import summarize

        return summarize(self[key] for key in self.streams)

    def summary_table(self) -> str:
        """The summary as a fixed-width text table."""
        from spikestore._tools.summary import format_table

        return format_table(self.summary())

    def _repr_html_(self) -> str:
        """The summary as an HTML table (Jupyter shows this for a bare ``run``)."""
        from html import escape

        from spikestore._tools.summary import format_html

        w = self.writer
        title = (f"<b>spikestore run</b> <code>{escape(str(self.path))}</code>: {len(self)} streams, "
                 f"created {escape(self.doc['created'])}, writer {escape(w['status'])}"
                 f"{', ' + str(w['dropped']) + ' records dropped' if w.get('dropped') else ''}"
                 f"{', ' + str(w['modified']) + ' changed in place (dropped)' if w.get('modified') else ''}")
        return format_html(title, self.summary())

    def close(self) -> None:
        """Close the store; reading from the run or its streams afterwards raises ``StoreClosedError``."""
        for part in self._parts.values():
            part.close()
        self._reader.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<spikestore.Run {str(self.path)!r}: {len(self)} streams, writer {self.writer['status']}>"


def open(path: str | os.PathLike[str] | StoreURL, *, backend: str | None = None,
         storage_options: dict[str, Any] | None = None) -> Run:
    """Open a store read-only and lazily.

    Works while a writer is still appending: only committed records are
    visible; call :meth:`Run.refresh` to see newer ones.

    ``path`` may be the URL of a Zarr store on object storage
    (``s3://bucket/run.zarr``), with ``storage_options`` passed to zarr's
    ``FsspecStore.from_url`` as zarr passes them (``docs/object-storage.md``).

    Raises
    ------
    StoreNotFoundError
        If nothing, or something that is not a spikestore store, is at ``path``.
    DamagedStoreError
        If the root document cannot be read, or is missing from a store that
        holds groups (``spikestore verify`` lists every problem).
    StorageError
        If the storage behind a URL cannot be reached or fails a request
        (not damage: try again once it answers; ``docs/object-storage.md`` §4).
    ReadOnlyError
        If access to the store is refused (a ``PermissionError``).
    """
    return _open_run(location(path, storage_options), backend)


def _open_run(p: Path | StoreURL, backend: str | None, rank: int | None = None) -> Run:
    """:func:`open` at a location; ``rank`` opens that rank's part of a run alone."""
    if isinstance(p, Path) and not p.exists():
        raise StoreNotFoundError(f"no store at {p}")
    odd = not_a_store_file(p) if isinstance(p, Path) else None
    if odd is not None:
        raise StoreNotFoundError(odd)
    name = backend_name_for(p, backend)
    be = open_backend(p, backend=name, writable=False)
    try:
        if not has_root(be):
            check_no_root(be)  # raises DamagedStoreError when the root lost its document
            hint = "; check the bucket, the path and storage_options" if isinstance(p, StoreURL) else ""
            raise StoreNotFoundError(f"{p} is not a spikestore store (no root metadata){hint}")
        return Run(p, be, name, rank)
    except BaseException:
        be.close()
        raise


def _reopen(path: Path | StoreURL, backend: str | None, rank: int | None = None) -> Run:
    return _open_run(path, backend, rank)


def worker_run(recipe: tuple[Callable[..., Run], tuple[Any, ...]], created: str) -> Run:
    """The run ``recipe`` opens, opened once per process and kept (:data:`WORKER_RUNS` at most).

    ``created`` is the store's creation time from the client's root
    document: a copy kept here of a store that was replaced since (same
    path, another ``created``) is refreshed, and a store that is not the
    one the graph was built on is an error rather than a read of other data.
    """
    key = pickle.dumps(recipe)
    with _runs_lock:
        run = _runs.get(key)
        if run is not None and run.doc["created"] != created:
            run.refresh()
        if run is None or run.doc["created"] != created:
            func, args = recipe
            run = func(*args)
            _runs[key] = run
        _runs.move_to_end(key)
        while len(_runs) > WORKER_RUNS:
            _runs.popitem(last=False)
    if run.doc["created"] != created:
        raise StoreNotFoundError(
            f"{run.path} was replaced by another store (created {run.doc['created']}, not {created}) "
            "since this dask graph was built; open it again and build the graph again")
    return run


def open_runs() -> list[str]:
    """Where the runs this process opened for tasks are (what a worker holds open; for checks and debugging)."""
    with _runs_lock:
        return [str(run.path) for run in _runs.values()]


def _stream_in_process(recipe: tuple[Callable[..., Run], tuple[Any, ...]], created: str, key: str,
                       count: int) -> Stream:
    """Stream ``key`` of the run ``recipe`` reopens, in this process's copy of it (:func:`worker_run`),
    refreshed once if it has fewer than ``count`` records: what a pickled stream becomes in a dask worker."""
    run = worker_run(recipe, created)
    stream = run[key]
    if len(stream) < count:  # records committed after this process opened the run
        with _runs_lock:
            run.refresh()
    return stream
