"""Stores behind a URL (``s3://bucket/run.zarr``, a :class:`~spikestore.backends._location.StoreURL`),
through zarr's own store classes.

:class:`ZarrStoreKeys` implements :class:`~spikestore.backends._keys.Keys`
over any ``zarr.abc.store.Store``; for a URL it is
``zarr.storage.FsspecStore.from_url(url, storage_options=..., read_only=...)``,
run on zarr's own event loop (``zarr.core.sync.sync``). Everything the
object store refuses becomes a :class:`~spikestore.errors.SpikestoreError`
that says what to do (:func:`object_store_error`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from spikestore._failures import Failure, classify, storage_error
from spikestore._format import damaged
from spikestore._format.checks import MAX_DOCUMENT_BYTES
from spikestore.backends._location import StoreURL
from spikestore.errors import InvalidArgumentError, MissingDependencyError, SpikestoreError, StoreExistsError

__all__ = ["ConditionalWritesError", "LeaseObject", "LeaseRecord", "ZarrStoreKeys", "clear_url", "object_store_error"]

_T = TypeVar("_T")


def object_store_error(exc: BaseException, url: str, doing: str, *, writable: bool = True) -> SpikestoreError:
    """What the object store refused while ``doing`` something, as a :class:`SpikestoreError` saying what to do.

    :func:`spikestore._failures.classify` says what ``exc`` means: access
    refused (or no credentials) is a :class:`ReadOnlyError`, a missing
    bucket or path a :class:`StoreNotFoundError`. A store that cannot be
    reached, or refuses for another reason, is a :class:`WriterError` for a
    writer (it reaches the training thread as every writer failure does) and
    a :class:`StorageError` for a reader: never damage, so that a network
    that fails while chunks are read says so instead of calling the store
    damaged (``docs/object-storage.md`` §4).
    """
    if isinstance(exc, SpikestoreError):
        return exc
    failure = classify(exc)
    text = f"{url}: {doing}: {type(exc).__name__}: {exc}"
    not_damage = "" if writable else "; this says nothing about the store's data, which may be intact"
    if failure is Failure.CREDENTIALS:
        fix = ("no credentials for the object store: set them in the environment (AWS_ACCESS_KEY_ID, "
               "AWS_SECRET_ACCESS_KEY) or pass them in storage_options (key=..., secret=...), or "
               "storage_options={'anon': True} for a public bucket")
    elif failure is Failure.ACCESS:
        fix = ("access denied: check the credentials in storage_options or the environment, and that they may "
               "read (and, to record, write) this bucket")
    elif failure is Failure.MISSING:
        fix = ("the bucket or path does not exist: create the bucket first, or check the URL and the endpoint "
               "(storage_options={'endpoint_url': ...})")
    elif failure is Failure.UNREACHABLE:
        fix = ("the object store cannot be reached: check the network and the endpoint "
               f"(storage_options={{'endpoint_url': ...}}), then try again{not_damage}")
    else:
        fix = ("the object store refused the request: check the URL, the credentials and storage_options, "
               f"then try again{not_damage}")
    return storage_error(exc, text, writing=writable, fix=fix)


class ZarrStoreKeys:
    """:class:`~spikestore.backends._keys.Keys` over a ``zarr.abc.store.Store``.

    Every call runs one coroutine of the store on zarr's event loop and
    waits for it, so a put has been acknowledged (on S3: is durable and
    visible to every reader) when :meth:`put` returns. Several threads may
    call at once: zarr's loop interleaves their requests.

    Parameters
    ----------
    store
        The zarr store (``FsspecStore`` for a URL; ``LocalStore`` too, for
        the A/B benchmark of ``docs/object-storage.md``).
    where
        The store's location, for messages.
    guard
        Called before every write (put, delete); raises to stop the writer
        (the writer lock's lease is lost: :class:`~spikestore._write.lease.LeasedWriterLock`).
    """

    durable = False  # a put returns once acknowledged: durable already

    def __init__(self, store: Any, where: str, guard: Callable[[], None] | None = None) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self.store = store
        self._guard = guard
        self._where = where
        self._writable = not getattr(store, "read_only", False)
        self._prototype = default_buffer_prototype()

    @classmethod
    def from_url(cls, url: StoreURL, *, writable: bool, guard: Callable[[], None] | None = None) -> ZarrStoreKeys:
        """Open ``url`` through ``zarr.storage.FsspecStore`` with its ``storage_options`` (``guard``: see above)."""
        from zarr.storage import FsspecStore

        try:
            store = FsspecStore.from_url(str(url), storage_options=url.storage_options or None,
                                         read_only=not writable)
        except ImportError as exc:
            raise MissingDependencyError(
                f"{url}: {exc}; install the object-storage extra: pip install 'spikestore[s3]' "
                "(s3fs for s3://, gcsfs for gs://, adlfs for az://)") from exc
        except Exception as exc:  # fsspec raises many kinds for a URL it refuses
            raise object_store_error(exc, str(url), "opening the store", writable=writable) from exc
        keys = cls(store, str(url), guard)
        if not writable:
            # Reach the store now: missing credentials or a network that is down
            # then say so, instead of reading later as a store that cannot be read.
            keys.has("zarr.json")
        return keys

    def _run(self, make: Callable[[], Coroutine[Any, Any, _T]], doing: str) -> _T:
        from zarr.core.sync import sync

        try:
            return sync(make())
        except SpikestoreError:
            raise
        except Exception as exc:  # translated: the caller gets a SpikestoreError
            raise object_store_error(exc, self._where, doing, writable=self._writable) from exc

    def where(self, key: str) -> str:
        return f"{self._where}/{key}" if key else self._where

    def get(self, key: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        buf = self._run(lambda: self.store.get(key, prototype=self._prototype), f"reading {key}")
        if buf is not None and len(buf) > limit:  # (an object store holds no FIFO, device or sparse file)
            raise damaged(self.where(""), self.where(key), f"it holds {len(buf)} bytes, more than the {limit} "
                          "the format allows there")
        return None if buf is None else buf.to_bytes()

    def has(self, key: str) -> bool:
        return bool(self._run(lambda: self.store.exists(key), f"looking for {key}"))

    def put(self, key: str, data: bytes, *, in_place: bool = False) -> None:
        # One PUT per key: an object store publishes it whole or not at
        # all, so in_place changes nothing.
        if self._guard is not None:
            self._guard()
        value = self._prototype.buffer.from_bytes(data)
        self._run(lambda: self.store.set(key, value), f"writing {key}")

    def overwrite_in_page(self, key: str, data: bytes) -> bool:
        # An object is replaced whole by a PUT, which failed already: there is no smaller write.
        return False

    def _listing(self, node: str) -> tuple[list[str], list[str]]:
        """The keys and the sub-nodes directly below ``node`` (listed afresh, never from a cache)."""
        # FsspecStore's list_dir cannot tell a key from a sub-node, and may answer from
        # fsspec's listing cache: ask its filesystem directly (fsspec's async API is the
        # underscore-named methods, ``_ls`` here), bypassing the cache.
        fs = getattr(self.store, "fs", None)
        if fs is not None and hasattr(fs, "_ls"):
            base = f"{self.store.path}/{node}".rstrip("/")

            async def ls() -> list[dict[str, Any]]:
                try:
                    found: list[dict[str, Any]] = await fs._ls(base, detail=True, refresh=True)
                except FileNotFoundError:
                    return []
                return found

            entries = self._run(ls, f"listing {node or 'the store'}")
            keys = [posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") != "directory"]
            dirs = [posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory"]
            return keys, dirs

        async def names() -> list[str]:
            return [n async for n in self.store.list_dir(node)]

        found = self._run(names, f"listing {node or 'the store'}")
        keys = [n for n in found if self.has(f"{node}/{n}" if node else n)]
        return keys, [n for n in found if n not in keys]

    def is_node(self, node: str) -> bool:
        keys, dirs = self._listing(node)
        return bool(keys or dirs)

    def children(self, node: str) -> tuple[str, ...]:
        return tuple(sorted(self._listing(node)[1]))

    def delete_node(self, node: str) -> None:
        if self._guard is not None:
            self._guard()
        self._run(lambda: self.store.delete_dir(node), f"deleting {node or 'the store'}")

    def nbytes(self, node: str) -> int:
        return int(self._run(lambda: self.store.getsize_prefix(node), f"measuring {node or 'the store'}"))

    def sync(self) -> None:
        """Nothing to do: every put was acknowledged, so it is durable."""


def clear_url(url: StoreURL, overwrite: bool) -> None:
    """Make way for a new store at ``url``: refuse a non-empty one unless ``overwrite``."""
    keys = ZarrStoreKeys.from_url(url, writable=True)
    if not keys.is_node(""):
        return
    if not overwrite:
        raise StoreExistsError(f"{url} already holds objects; pass overwrite=True to replace them, "
                               "or mode='a' to append to the store")
    keys.delete_node("")


#: HTTP statuses of a conditional request that did not hold (412), or that met another one at once (409).
_PRECONDITION = frozenset({409, 412})
#: What a store answers to a request header it does not implement.
_UNSUPPORTED = frozenset({400, 501})


class ConditionalWritesError(InvalidArgumentError):
    """The object store does not honour conditional writes (``If-None-Match``/``If-Match`` on PUT).

    An :class:`~spikestore.errors.InvalidArgumentError`: the fix is ``lock=False``.
    """


def _status(exc: BaseException) -> int | None:
    """The HTTP status an S3 client error in ``exc``'s chain carries (``None``: none)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
        e = e.__cause__ or e.__context__
    return None


@dataclass(frozen=True)
class LeaseRecord:
    """The lock object as read back: its bytes, its ETag, and its age by the object store's own clock."""

    body: bytes
    etag: str
    age_s: float


class LeaseObject:
    """One object beside a store on S3 (``<url>.lock``), written only with conditional PUTs.

    :meth:`create` writes it only if it is absent (``If-None-Match: *``),
    :meth:`replace` only if it still has a given ETag (``If-Match``), and
    :meth:`delete` removes it only if it still has that ETag; each answers
    whether its condition held. The object's age comes from the object
    store's clock alone (the response's ``Date`` minus the object's
    ``Last-Modified``), so writers on hosts whose clocks disagree still
    agree on when a lease expired.

    Raises
    ------
    ConditionalWritesError
        From :meth:`create` or :meth:`replace`, when the object store rejects
        the condition (HTTP 400 or 501).
    MissingDependencyError
        For a URL whose file system is not S3 (``s3fs``).
    """

    def __init__(self, url: StoreURL) -> None:
        keys = ZarrStoreKeys.from_url(url, writable=True)
        fs = getattr(keys.store, "fs", None)
        if fs is None or not hasattr(fs, "_call_s3"):
            raise ConditionalWritesError(
                f"{url}: the writer lock on object storage uses S3 conditional writes, which this URL's "
                "file system does not offer; make sure only one process records to this URL and pass "
                "lock=False (docs/object-storage.md §3)")
        self._fs = fs
        self.url = f"{url}.lock"
        self._bucket, _, self._key = f"{keys.store.path}.lock".partition("/")

    def _call(self, method: str, doing: str, **kwargs: Any) -> dict[str, Any] | None:
        """One S3 request; ``None`` when its condition did not hold (or the object is missing, for a read)."""
        from zarr.core.sync import sync

        async def call() -> dict[str, Any] | None:
            try:
                out: dict[str, Any] = await self._fs._call_s3(method, Bucket=self._bucket, Key=self._key, **kwargs)
            except FileNotFoundError:
                if method in ("get_object", "delete_object") or "IfMatch" in kwargs:
                    return None  # (If-Match on an object that is gone: the condition did not hold)
                raise
            except Exception as exc:
                status = _status(exc)
                if status in _PRECONDITION:
                    return None
                if status in _UNSUPPORTED and method == "put_object":
                    raise ConditionalWritesError(
                        f"{self.url}: the object store refused a conditional write ({type(exc).__name__}: "
                        f"{exc}); it does not offer the conditional writes the writer lock needs: make sure "
                        "only one process records to this URL and pass lock=False "
                        "(docs/object-storage.md §3)") from exc
                raise
            if method == "get_object":
                out["Body"] = await out["Body"].read()
            return out

        try:
            return sync(call())
        except SpikestoreError:
            raise
        except Exception as exc:  # translated: the caller gets a SpikestoreError
            raise object_store_error(exc, self.url, doing) from exc

    def create(self, body: bytes) -> str | None:
        """Write the object if it is absent; its ETag, or ``None`` when it exists."""
        out = self._call("put_object", "creating the writer lock", Body=body, IfNoneMatch="*")
        return None if out is None else str(out["ETag"])

    def replace(self, body: bytes, etag: str) -> str | None:
        """Write the object if its ETag is still ``etag``; the new ETag, or ``None`` when it changed."""
        out = self._call("put_object", "renewing the writer lock", Body=body, IfMatch=etag)
        return None if out is None else str(out["ETag"])

    def read(self) -> LeaseRecord | None:
        """The object now (``None``: absent)."""
        out = self._call("get_object", "reading the writer lock")
        if out is None:
            return None
        date = out.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date) if date else datetime.now(UTC)
        return LeaseRecord(bytes(out["Body"]), str(out["ETag"]), (now - out["LastModified"]).total_seconds())

    def delete(self, etag: str | None) -> bool:
        """Remove the object if its ETag is still ``etag`` (``None``: whatever it holds); whether it was."""
        condition = {} if etag is None else {"IfMatch": etag}
        return self._call("delete_object", "removing the writer lock", **condition) is not None
