"""The writer lock of a store on object storage: a leased lock object (:class:`LeasedWriterLock`).

Object stores have no file locks. A writer of ``s3://bucket/run.zarr`` holds
the object ``s3://bucket/run.zarr.lock`` instead, created only if absent and
renewed with conditional writes, for as long as it lives; a writer that died
leaves a lease that expires by the object store's clock, and the next writer
takes it over (``docs/object-storage.md`` §3). :class:`NoWriterLock` stands in
where the caller promises a single writer (``lock=False``), for object stores
without conditional writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from spikestore._write.lock import in_use
from spikestore.backends import StoreURL
from spikestore.errors import SpikestoreError, StoreInUseError, WriterError

if TYPE_CHECKING:
    from spikestore.backends._remote import LeaseObject

__all__ = ["LEASE_S", "RENEWALS", "LeasedWriterLock", "NoWriterLock"]

_log = logging.getLogger("spikestore")
#: Tries at creating or taking over the lock object before giving up (others keep taking it).
_ATTEMPTS = 20

#: Seconds a lock object on object storage stays valid without renewal: a writer that died holds its
#: store this long (by the object store's clock), then the next writer takes the store over.
LEASE_S = 60.0
#: The holder renews its lease every ``LEASE_S / RENEWALS`` seconds.
RENEWALS = 6


class LeasedWriterLock:
    """The writer lock of a store on S3: a leased lock object ``<url>.lock`` beside the store's keys.

    :meth:`acquire` creates the object only if it is absent (a PUT with
    ``If-None-Match: *``), then checks that the object store honours the
    condition (a second such PUT, and a PUT with ``If-Match`` on a made-up
    ETag, must both be refused). A thread renews the lease every
    ``LEASE_S / RENEWALS`` seconds (a PUT with ``If-Match`` on the ETag it
    holds). A lock object not renewed for :data:`LEASE_S` seconds, by the
    object store's own clock, belongs to a writer that died: the next writer
    takes it over with ``If-Match`` on that stale ETag, so of two writers
    taking it over at once one wins. :meth:`release` deletes the object
    (``If-Match`` on its ETag).

    A holder that cannot renew its lease for ``LEASE_S * (RENEWALS - 1) /
    RENEWALS`` seconds of its own clock (the network is down, the process
    was stopped) stops writing (:meth:`check` raises), so it has stopped
    before another writer may take over (``docs/object-storage.md`` §3).

    Parameters
    ----------
    store
        The store's URL (its ``storage_options`` reach the lock object too).
    """

    def __init__(self, store: StoreURL) -> None:
        self.store = store
        self.lease_s = LEASE_S
        self._token = uuid.uuid4().hex
        self._renewal = 0
        self._object: LeaseObject | None = None
        self._etag: str | None = None
        self._deadline = 0.0
        self._lost: str | None = None
        self._state = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def _body(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": self._token,
                           "renewal": self._renewal, "lease_s": self.lease_s}).encode()

    def acquire(self, *, create: bool = False) -> None:
        """Take the lock now, or raise :class:`StoreInUseError` naming the writer that holds it.

        Raises
        ------
        StoreInUseError
            Another writer holds a lease that has not expired.
        InvalidArgumentError
            The object store does not honour conditional writes (the fix is
            ``lock=False``), or the URL is not on S3.
        WriterError, ReadOnlyError, StoreNotFoundError
            The object store cannot be reached or refuses the request.
        """
        from spikestore.backends._remote import LeaseObject

        obj = self._object = LeaseObject(self.store)
        for _ in range(_ATTEMPTS):
            sent = time.monotonic()
            etag = obj.create(self._body())
            if etag is not None:
                self._check_honoured(obj)
                self._hold(etag, sent)
                return
            found = obj.read()
            if found is None:
                continue  # released meanwhile: create it again
            info = _lease_info(found.body)
            if info.get("token") == self._token:  # our own create, answered late (a retried request)
                self._hold(found.etag, sent)
                return
            lease = _number(info.get("lease_s"), self.lease_s)  # as long as its holder renews it for
            if found.age_s <= lease:
                raise in_use(self.store, f"{_holder(info)} (its lease on {obj.url} was renewed "
                                         f"{found.age_s:.0f} s ago; a writer that died leaves it to expire "
                                         f"{lease:.0f} s after its last renewal)")
            sent = time.monotonic()
            etag = obj.replace(self._body(), found.etag)  # take the expired lease over
            if etag is None:
                raise in_use(self.store, "another writer (it took the expired lock over first)")
            _log.info("spikestore: %s: took over the writer lock of %s, expired %.0f s ago", self.store,
                      _holder(info), found.age_s - lease)
            self._hold(etag, sent)
            return
        raise StoreInUseError(f"{self.store}: could not take the writer lock {obj.url} after {_ATTEMPTS} "
                              "attempts; writers keep creating and deleting it")

    def _check_honoured(self, obj: LeaseObject) -> None:
        """Raise ``ConditionalWritesError`` (deleting the object) unless both conditions are honoured."""
        from spikestore.backends._remote import ConditionalWritesError

        ignored = None
        if obj.create(self._body()) is not None:
            ignored = "If-None-Match"
        elif obj.replace(self._body(), '"' + "0" * 32 + '"') is not None:
            ignored = "If-Match"
        if ignored is None:
            return
        with contextlib.suppress(SpikestoreError):
            obj.delete(None)
        raise ConditionalWritesError(
            f"{self.store}: the object store ignores conditional writes ({ignored} on PUT), which the writer "
            "lock needs (or the installed botocore is too old to send them: upgrade it); spikestore cannot stop "
            "a second writer here: make sure only one process records to this URL and pass lock=False "
            "(docs/object-storage.md §3)")

    def _hold(self, etag: str, sent: float) -> None:
        with self._state:
            self._etag = etag
            self._deadline = sent + self.lease_s * (RENEWALS - 1) / RENEWALS
        self._thread = threading.Thread(target=self._renew_until_released, name="spikestore-lease", daemon=True)
        self._thread.start()

    def _renew_until_released(self) -> None:
        obj = self._object
        assert obj is not None
        while not self._stop.wait(self.lease_s / RENEWALS):
            with self._state:
                etag = self._etag
                self._renewal += 1
                body = self._body()
            if etag is None:
                return
            sent = time.monotonic()
            try:
                new = obj.replace(body, etag)
                if new is None:  # perhaps our own renewal, answered late: the object says
                    found = obj.read()
                    if found is not None and _lease_info(found.body) == json.loads(body):
                        new = found.etag
            except SpikestoreError as exc:  # the object store is out of reach: try again at the next tick
                _log.debug("spikestore: renewing the writer lock of %s failed: %s", self.store, exc)
                continue
            with self._state:
                if new is None:
                    self._lost = (f"{self.store}: another writer took the writer lock {obj.url} over (this "
                                  "writer's lease had expired), or the lock object was deleted; this writer "
                                  "stopped writing")
                    self._etag = None
                    return
                self._etag = new
                self._deadline = sent + self.lease_s * (RENEWALS - 1) / RENEWALS

    def check(self) -> None:
        """Raise :class:`~spikestore.errors.WriterError` unless the lease is held and current.

        Called before every write to the store: a writer whose lease was taken
        over, or could not be renewed in time, writes nothing more.
        """
        with self._state:
            lost, deadline = self._lost, self._deadline
        if lost is not None:
            raise WriterError(lost)
        if os.getpid() == self._pid and time.monotonic() > deadline:
            raise WriterError(
                f"{self.store}: the writer lock's lease could not be renewed for "
                f"{self.lease_s * (RENEWALS - 1) / RENEWALS:.0f} s (the object store out of reach, or this "
                "process stopped); this writer stopped writing, since another writer may take the store over "
                "once the lease expires. Records committed before stay readable; append with mode='a'")

    def hold_store(self) -> None:
        """Nothing more to hold: the lock object covers the store from :meth:`acquire` on."""

    def release(self) -> None:
        """Stop renewing and delete the lock object (idempotent; a forked child leaves it to its parent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if os.getpid() != self._pid:
            return
        if thread is not None:
            thread.join(self.lease_s)  # (a renewal stuck in a request: the conditional delete below settles it)
        with self._state:
            etag, self._etag = self._etag, None
        if etag is None or self._object is None:
            return
        try:
            self._object.delete(etag)
        except SpikestoreError as exc:  # the lease expires by itself
            _log.warning("spikestore: could not remove the writer lock of %s (%s); the next writer can take "
                         "the store over %.0f s after its last renewal", self.store, exc, self.lease_s)


def _lease_info(body: bytes) -> dict[str, Any]:
    try:
        info = json.loads(body)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _number(value: object, default: float) -> float:
    """``value`` as a lease interval of up to an hour, else ``default`` (what a holder wrote is not trusted)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 3600
    return float(value) if ok else default  # type: ignore[arg-type]


def _holder(info: dict[str, Any]) -> str:
    """Who holds a lock object, as its holder wrote it (a description, never trusted for anything else)."""
    try:
        return f"process {int(info['pid'])} on {str(info['host'])[:255]}"
    except (KeyError, TypeError, ValueError):
        return "another writer"


class NoWriterLock:
    """The stand-in for a writer lock where the caller promises a single writer (``lock=False`` for a URL).

    For object stores without conditional writes, where no lock object can
    be leased (``docs/object-storage.md`` §3).
    """

    def __init__(self, store: StoreURL) -> None:
        self.store = store

    def acquire(self, *, create: bool = False) -> None:
        """Nothing to take."""

    def hold_store(self) -> None:
        """Nothing to hold."""

    def check(self) -> None:
        """Nothing to check."""

    def release(self) -> None:
        """Nothing to release."""
