"""The root document of a store being written, and the only code that rewrites it.

The :class:`~spikestore.Store` owns one :class:`RootDocument` for its whole
life: it creates (or resumes) it, hands it to the writer thread, which only
reports new streams, dropped records (queue full, or changed in place) and
the flight recorder's triggers through it, and finishes it with the
writer's final status when the store closes.
"""

from __future__ import annotations

import threading
from typing import Any

from spikestore._format import RANKED_FORMAT_VERSION, now_iso, validate_doc
from spikestore.backends import Backend

__all__ = ["RootDocument"]


class RootDocument:
    """The root document of one store, written through its backend.

    Calls may come from the training thread (opening, closing) and from the
    writer thread and its helpers (new streams, dropped counts); a lock keeps
    each rewrite whole.
    """

    def __init__(self, backend: Backend, doc: dict[str, Any]) -> None:
        self._backend = backend
        self._doc = doc
        self._lock = threading.Lock()
        self._known = set(doc["streams"])

    @property
    def dropped(self) -> int:
        """Records dropped so far (``on_full="drop"``), as counted in the document."""
        return int(self._doc["writer"]["dropped"])

    def write(self) -> None:
        """Validate and write the document as it is (a new store, or one resumed for append)."""
        with self._lock:
            self._write()

    def include_ranks(self, ranks: list[int]) -> None:
        """List the ranks of a process group that record this run (before :meth:`write`).

        Rank 0 calls this for a world of two or more; a resumed run keeps the
        ranks it had. Such a root is format version 3 (docs/format.md §1.2),
        so that an older reader refuses it instead of showing rank 0 alone.
        """
        with self._lock:
            self._doc["ranks"] = sorted(set(self._doc.get("ranks", [])) | set(ranks))
            self._doc["format_version"] = RANKED_FORMAT_VERSION

    def mark_part(self, rank: int) -> None:
        """Record that this store is rank ``rank``'s part of a run (before :meth:`write`), so that
        opened on its own it still says which rank recorded it (docs/format.md §1.2)."""
        with self._lock:
            self._doc["rank"] = rank

    def add_stream(self, key: str) -> None:
        """List a stream, before its own document is written, so readers find it."""
        if key in self._known:
            return
        with self._lock:
            if key not in self._known:
                self._doc["streams"].append(key)
                self._known.add(key)
                self._write()

    @property
    def flight(self) -> dict[str, Any] | None:
        """The flight recorder's object (triggers and counts; docs/format.md §2.3), if the store has one."""
        doc: dict[str, Any] | None = self._doc.get("flight_recorder")
        return doc

    def set_flight(self, flight: dict[str, Any]) -> None:
        """Record the flight recorder's settings, triggers and counts (after the records they describe)."""
        with self._lock:
            if self._doc.get("flight_recorder") != flight:
                self._doc["flight_recorder"] = flight
                self._write()

    def set_counts(self, *, dropped: int) -> None:
        """Record how many records ``on_full="drop"`` dropped so far."""
        with self._lock:
            w = self._doc["writer"]
            if w["dropped"] != dropped:
                w["dropped"] = dropped
                self._write()

    def finish(self, error: BaseException | None, failed_streams: dict[str, str] | None = None) -> None:
        """Record the writer's final status (``closed``, or ``failed`` with the error), and the streams
        that stopped on their own (``failed_streams``: stream key to error)."""
        with self._lock:
            w = self._doc["writer"]
            if failed_streams:
                w["failed_streams"] = dict(failed_streams)
            w["closed"] = now_iso()
            if error is not None:
                w["status"] = "failed"
                w["error"] = f"{type(error).__name__}: {error}"[:2000]
            else:
                w["status"] = "closed"
            self._write()

    def _write(self) -> None:
        validate_doc(self._doc, "root", str(self._backend.path))
        self._backend.write_doc("", self._doc)
