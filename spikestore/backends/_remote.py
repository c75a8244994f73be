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
from typing import Any, TypeVar

from spikestore._failures import Failure, classify, storage_error
from spikestore._format import damaged
from spikestore._format.checks import MAX_DOCUMENT_BYTES
from spikestore.backends._location import StoreURL
from spikestore.errors import MissingDependencyError, SpikestoreError, StoreExistsError

__all__ = ["ZarrStoreKeys", "clear_url", "object_store_error"]

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
    """

    durable = False  # a put returns once acknowledged: durable already

    def __init__(self, store: Any, where: str) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self.store = store
        self._where = where
        self._writable = not getattr(store, "read_only", False)
        self._prototype = default_buffer_prototype()

    @classmethod
    def from_url(cls, url: StoreURL, *, writable: bool) -> ZarrStoreKeys:
        """Open ``url`` through ``zarr.storage.FsspecStore`` with its ``storage_options``."""
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
        keys = cls(store, str(url))
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
        value = self._prototype.buffer.from_bytes(data)
        self._run(lambda: self.store.set(key, value), f"writing {key}")

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
