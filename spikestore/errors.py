"""Every error spikestore raises on purpose.

All of them derive from :class:`SpikestoreError`, so ``except
spikestore.SpikestoreError`` catches everything the library raises
deliberately. Where a built-in exception has the same meaning, the class also
derives from it, so code written against the built-in keeps working::

    SpikestoreError
    ├── StoreExistsError        (FileExistsError)  refusing to overwrite a store
    ├── StoreNotFoundError      (FileNotFoundError) no store at the path
    ├── StoreInUseError         (BlockingIOError)   another live writer holds the store
    ├── ReadOnlyError           (PermissionError)   writing through a reader; storage that denies access
    ├── StorageError            (OSError)           the storage cannot be reached or fails a request: not damage
    ├── StoreClosedError        (ValueError)        using a closed store or run
    ├── InvalidValueError       (TypeError)         a value that cannot be recorded
    ├── InvalidArgumentError    (ValueError)        a bad argument
    ├── StreamNotFoundError     (KeyError)          an unknown stream key
    ├── RecordIndexError        (IndexError)        a record number out of range
    ├── MissingDependencyError  (ImportError)       an optional extra is not installed
    ├── FlushTimeoutError       (TimeoutError)      flush(timeout=...) ran out of time
    ├── FormatError             (ValueError)        metadata that breaks the format
    │   └── DamagedStoreError                       missing or corrupt chunks
    │       ├── ChecksumError                       a chunk fails its checksum or does not decode
    │       └── ArrayNameTakenError                 a crash left an array that cannot be replaced
    ├── InPlaceModificationError (RuntimeError)     a tensor changed before the writer read it
    ├── MonitorWarning          (UserWarning)       a monitor records nothing, or cannot step by itself
    └── WriterError             (RuntimeError)      the writer thread failed
        └── StreamFailedError                       one stream stopped; the others go on
"""

from __future__ import annotations

__all__ = [
    "ArrayNameTakenError",
    "ChecksumError",
    "DamagedStoreError",
    "FlushTimeoutError",
    "FormatError",
    "InPlaceModificationError",
    "InvalidArgumentError",
    "InvalidValueError",
    "MissingDependencyError",
    "MonitorWarning",
    "ReadOnlyError",
    "RecordIndexError",
    "SpikestoreError",
    "StorageError",
    "StoreClosedError",
    "StoreExistsError",
    "StoreInUseError",
    "StoreNotFoundError",
    "StreamFailedError",
    "StreamNotFoundError",
    "WriterError",
]


class SpikestoreError(Exception):
    """Base class of every error spikestore raises on purpose."""


class StoreExistsError(SpikestoreError, FileExistsError):
    """A non-empty store already exists where ``mode="w"`` would write."""


class StoreNotFoundError(SpikestoreError, FileNotFoundError):
    """No spikestore store exists at the given path."""


class StoreInUseError(SpikestoreError, BlockingIOError):
    """Another process that is still alive has the store open for writing."""


class ReadOnlyError(SpikestoreError, PermissionError):
    """A write was attempted on a store opened read-only, or the storage denied access.

    Access denied covers a local file this user may not read and an object
    store that refuses the credentials (or finds none). The store itself is
    not known to be damaged: fix the permissions or credentials and try again.
    """


class StorageError(SpikestoreError, OSError):
    """The storage under a store cannot be reached, or fails a request, while reading.

    An object store whose endpoint does not answer, a request that times
    out, a server that errs or refuses for a reason other than access: the
    store may be intact, so this is never a :class:`DamagedStoreError`
    (``spikestore verify`` stops and says so instead of listing damage).
    The message says what to check (the network, ``endpoint_url``,
    ``storage_options``); the original exception is chained. Try again
    once the storage answers. (A writer's storage failures reach the
    training thread as a :class:`WriterError`.)
    """


class StoreClosedError(SpikestoreError, ValueError):
    """The store (or run) was closed and cannot be used any more."""


class InvalidValueError(SpikestoreError, TypeError):
    """A value handed to the store cannot be recorded (wrong type, object dtype...)."""


class InvalidArgumentError(SpikestoreError, ValueError):
    """An argument is out of range or of the wrong kind."""


class StreamNotFoundError(SpikestoreError, KeyError):
    """The stream key names no stream of this store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class RecordIndexError(SpikestoreError, IndexError):
    """A record number is out of range for its stream or monitor."""


class MissingDependencyError(SpikestoreError, ImportError):
    """A feature needs an optional extra that is not installed (the message names it)."""


class FlushTimeoutError(SpikestoreError, TimeoutError):
    """``Store.flush(timeout=...)`` returned before the writer had committed everything."""


class FormatError(SpikestoreError, ValueError):
    """Metadata on disk does not follow the spikestore format."""


class DamagedStoreError(FormatError):
    """The store is damaged: a document that cannot be read, fails its schema or contradicts
    itself or the arrays, or data inside the committed range that is missing, fails its
    checksum or is not the chunk the document names. ``spikestore verify`` lists every case.

    ``problem`` says what is damaged and where, without the advice to run
    ``spikestore verify`` that the message ends with (empty when the message
    is the problem alone).
    """

    problem: str = ""


class ChecksumError(DamagedStoreError):
    """An encoded chunk fails its checksum, or does not decompress to its array's shape."""


class ArrayNameTakenError(DamagedStoreError):
    """A crash left an array under a name the writer needs, and it cannot be removed.

    Raised by a backend's ``create_array`` (HDF5 metadata cut short by a
    kill); the writer then takes the next segment number.
    """


class InPlaceModificationError(SpikestoreError, RuntimeError):
    """A recorded tensor was modified in place before the writer read it."""


class MonitorWarning(SpikestoreError, UserWarning):
    """A monitor is set up so that it cannot record what you probably meant; it says so once.

    Issued when a ``function_on_*`` returns ``None`` (nothing is recorded
    for that layer), and when a network in single-step mode runs while the
    store's step was never set (each forward pass is one time step, so the
    monitor cannot tell where a training step ends). The message says what
    to change.
    """


class WriterError(SpikestoreError, RuntimeError):
    """The background writer failed; the original exception is chained."""


class StreamFailedError(WriterError):
    """One stream's records could not be stored; that stream stopped, the others keep recording.

    ``stream`` and ``step`` name the stream and the step of the record that
    failed; the original exception is chained.
    """

    stream: str = ""
    step: int = -1
