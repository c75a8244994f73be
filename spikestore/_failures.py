"""What an exception means for a store: the one failure classifier.

Every boundary that catches an exception it did not raise itself (the
reader fetching a chunk or a document, ``verify``, the writer thread, a
backend meeting its storage) asks :func:`classify` what it means, and acts
on the answer:

- the storage failed or refused (:attr:`Failure.ACCESS`,
  :attr:`Failure.CREDENTIALS`, :attr:`Failure.UNREACHABLE`,
  :attr:`Failure.STORAGE`; :func:`is_storage`): the store behind it may be
  intact, so this is never damage. Readers raise
  :class:`~spikestore.errors.ReadOnlyError` or
  :class:`~spikestore.errors.StorageError`, with the ``errno`` kept; a writer
  stops as a whole (:func:`stops_writer`), since no other stream could be
  written either;
- the store is damaged (:attr:`Failure.DAMAGE`, :attr:`Failure.UNREADABLE` on
  the read side): :class:`~spikestore.errors.DamagedStoreError`, which
  ``spikestore verify`` lists;
- something missing (:attr:`Failure.MISSING`): on the read side a store that
  is gone (:class:`~spikestore.errors.StoreNotFoundError`) or a file of it
  that is (damage); a writer stops;
- a failure of what one stream's record went through (everything else on the
  write side): that stream stops, the others go on
  (:class:`~spikestore.errors.StreamFailedError`).

:func:`storage_error` builds the error for a storage failure from the same
answer, with the fix for its ``errno`` (:data:`FIXES`).
"""

from __future__ import annotations

import enum
import errno

from spikestore.errors import (
    FormatError,
    ReadOnlyError,
    SpikestoreError,
    StorageError,
    StoreNotFoundError,
    StreamFailedError,
    WriterError,
)

__all__ = ["FIXES", "Failure", "classify", "is_storage", "stops_writer", "storage_error"]


class Failure(enum.Enum):
    """What an exception says about a store (:func:`classify`)."""

    #: Not an :class:`Exception` (``KeyboardInterrupt``...), or memory ran out: nothing may go on.
    INTERRUPT = "interrupt"
    #: The storage denies access: permissions, a read-only file system, credentials it refuses.
    ACCESS = "access"
    #: The object store's client finds no usable credentials.
    CREDENTIALS = "credentials"
    #: The storage cannot be reached, or did not answer in time.
    UNREACHABLE = "unreachable"
    #: The storage failed a request otherwise: a full disk, a quota, an I/O error, a refused request.
    STORAGE = "storage"
    #: Nothing is where the store (or a file of it) should be.
    MISSING = "missing"
    #: Metadata or data that breaks the format, raised as such (``FormatError``, ``DamagedStoreError``).
    DAMAGE = "damage"
    #: What storage libraries and parsers raise for bytes they cannot make sense of (h5py's ``OSError``
    #: and ``RuntimeError`` without a system ``errno``, ``KeyError``, JSON's ``ValueError``, a schema
    #: violation): damage when reading a store, one stream's failure when writing it.
    UNREADABLE = "unreadable"
    #: An error spikestore raises on purpose about something else (a closed run, a bad argument).
    REFUSED = "refused"
    #: Anything else: a bug, or a value a stream cannot store.
    OTHER = "other"

    @property
    def storage_failed(self) -> bool:
        """Whether this says the storage failed (access, reach, a request), which is never damage."""
        return self in _STORAGE


_STORAGE = frozenset({Failure.ACCESS, Failure.CREDENTIALS, Failure.UNREACHABLE, Failure.STORAGE})

#: ``errno`` values that deny access.
_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
#: ``errno`` values of a storage that fails whatever is asked of it.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.ESTALE, errno.EMFILE,
                             errno.ENFILE})
#: ``errno`` values of something that is not there.
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})

#: Names of the object-store client exceptions (botocore) that mean there are no usable credentials.
_NO_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"})
#: Names of the client exceptions (botocore, aiohttp) that mean the endpoint did not answer in time or at all.
_UNREACHABLE = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                          "ConnectionError", "ReadTimeoutError", "ServerDisconnectedError", "ClientOSError",
                          "ConnectionClosedError", "ServerTimeoutError"})
#: Exception classes of unreadable bytes (UnicodeDecodeError and json's JSONDecodeError are ValueErrors;
#: h5py maps HDF5's errors to OSError, RuntimeError, KeyError and ValueError).
_UNREADABLE = (OSError, RuntimeError, KeyError, ValueError, TypeError)

#: What to do about a storage failure, by ``errno``.
FIXES: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free disk space, or record to another file system",
    errno.EDQUOT: "the disk quota is used up: free space within your quota, or record elsewhere",
    errno.EFBIG: "the file reached the largest size allowed (ulimit -f, or the file system's limit)",
    errno.EROFS: "the file system is read-only: record to a writable folder",
    errno.EACCES: "no permission: check the permissions of the store's files and folder",
    errno.EPERM: "no permission: check the permissions of the store's files and folder",
    errno.ENOENT: "the file or its folder does not exist, or was removed while in use",
}

_CHAIN = 8  # causes followed (s3fs wraps client errors in an OSError)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, nearest first."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < _CHAIN:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _is_schema_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``jsonschema`` error (a document that breaks its schema)."""
    return type(exc).__module__.partition(".")[0] == "jsonschema"


def classify(exc: BaseException) -> Failure:
    """What ``exc`` says about the store it was raised for.

    Decided by the exception's class, its ``errno``, and, for object-store
    clients that spikestore does not import, the names of the exceptions it
    was raised from. A :class:`~spikestore.errors.WriterError` (other than a
    stream's) is a storage failure: backends raise it when the storage fails
    a writer.
    """
    if not isinstance(exc, Exception) or isinstance(exc, MemoryError):
        return Failure.INTERRUPT
    if isinstance(exc, FormatError):
        return Failure.DAMAGE
    if isinstance(exc, ReadOnlyError):
        return Failure.ACCESS
    if isinstance(exc, StorageError):
        return Failure.UNREACHABLE if _unreachable(exc) else Failure.STORAGE
    if isinstance(exc, StoreNotFoundError):
        return Failure.MISSING
    if isinstance(exc, WriterError) and not isinstance(exc, StreamFailedError):
        return Failure.STORAGE
    if isinstance(exc, SpikestoreError):
        return Failure.REFUSED
    chain = _chain(exc)
    if any(type(e).__name__ in _NO_CREDENTIALS for e in chain):
        return Failure.CREDENTIALS
    no = exc.errno if isinstance(exc, OSError) else None
    if isinstance(exc, PermissionError) or no in _ACCESS_ERRNOS:
        return Failure.ACCESS
    if _unreachable(exc):
        return Failure.UNREACHABLE
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)) or no in _MISSING_ERRNOS:
        return Failure.MISSING
    if no in _STORAGE_ERRNOS:
        return Failure.STORAGE
    if isinstance(exc, _UNREADABLE) or _is_schema_error(exc):
        return Failure.UNREADABLE
    return Failure.OTHER


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, says the endpoint cannot be reached."""
    return any(type(e).__name__ in _UNREACHABLE or isinstance(e, (ConnectionError, TimeoutError))
               for e in _chain(exc))


def is_storage(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage failed (unreachable, access denied, a failed request).

    Such an error is never turned into damage: the store behind it may be
    intact (``docs/object-storage.md`` §4).
    """
    return classify(exc).storage_failed


def stops_writer(exc: BaseException) -> bool:
    """Whether ``exc``, raised in the writer, stops the whole writer rather than one stream.

    Interrupts, memory exhaustion and failures of the store's storage (full,
    read-only, permission lost, removed, unreachable) concern every stream;
    anything else raised while one stream's record is prepared or stored
    concerns that stream (:mod:`spikestore._write.failures`).
    """
    return classify(exc) in (Failure.INTERRUPT, Failure.MISSING, *_STORAGE)


def storage_error(exc: BaseException, message: str, *, writing: bool, where: str | None = None,
                  fix: str | None = None) -> SpikestoreError:
    """The error to raise for the storage failure ``exc``, saying ``message`` and what to do.

    Access denied is a :class:`~spikestore.errors.ReadOnlyError`, something
    missing a :class:`~spikestore.errors.StoreNotFoundError`; any other
    failure a :class:`~spikestore.errors.WriterError` for a writer and a
    :class:`~spikestore.errors.StorageError` for a reader. ``exc``'s
    ``errno`` is kept (with ``where``, or its own file name), and the fix for
    it (``fix``, else the one :data:`FIXES` has for the ``errno``) ends the
    message unless ``message`` says it already.
    ``exc`` is chained.
    """
    failure = classify(exc)
    no = exc.errno if isinstance(exc, OSError) else None
    filename = where if where is not None else (exc.filename if isinstance(exc, OSError) else None)
    fix = fix if fix is not None else FIXES.get(no or 0)
    text = f"{message}; {fix}" if fix is not None and fix not in message else message
    err: SpikestoreError
    if failure in (Failure.ACCESS, Failure.CREDENTIALS):
        err = ReadOnlyError(no, text, filename) if no is not None else ReadOnlyError(text)
    elif failure is Failure.MISSING:
        err = StoreNotFoundError(no, text, filename) if no is not None else StoreNotFoundError(text)
    elif writing:
        err = WriterError(text)
    else:
        err = StorageError(no, text, filename) if no is not None else StorageError(text)
    err.__cause__ = exc
    return err
