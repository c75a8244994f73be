"""The failure classifier: what each kind of exception means for a store, decided in one place.

The classifier has no public door of its own (every boundary of the reader, ``verify`` and the writer
calls it), so these tests import it; what users see of it is tested through the public API in
test_errors, test_damage, test_verify, test_faults and test_object_storage.
"""

from __future__ import annotations

import errno
import json

import h5py
import jsonschema
import pytest

from spikestore import errors
from spikestore._failures import Failure, classify, is_storage, stops_writer, storage_error


def _named(name: str, base: type[Exception] = Exception) -> type[Exception]:
    """An exception class called ``name``, as object-store clients (botocore, aiohttp) define them."""
    return type(name, (base,), {})


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    """``outer`` raised from ``inner`` (as s3fs wraps a client error in an OSError)."""
    outer.__cause__ = inner
    return outer


def _json_error() -> ValueError:
    try:
        json.loads("{not json")
    except ValueError as exc:
        return exc
    raise AssertionError("the JSON parser accepted garbage")


def _schema_error() -> jsonschema.ValidationError:
    try:
        jsonschema.validate({"count": "three"}, {"properties": {"count": {"type": "integer"}}})
    except jsonschema.ValidationError as exc:
        return exc
    raise AssertionError("the schema accepted a string for an integer")


def _h5py_error(tmp_path) -> OSError:
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"not an HDF5 file" * 64)
    try:
        h5py.File(path, "r")
    except OSError as exc:
        return exc
    raise AssertionError("h5py opened garbage")


CASES: list[tuple[str, BaseException, Failure]] = [
    # errno values of the storage itself
    ("full disk", OSError(errno.ENOSPC, "No space left on device"), Failure.STORAGE),
    ("quota", OSError(errno.EDQUOT, "Disk quota exceeded"), Failure.STORAGE),
    ("file too large", OSError(errno.EFBIG, "File too large"), Failure.STORAGE),
    ("I/O error", OSError(errno.EIO, "Input/output error"), Failure.STORAGE),
    ("stale NFS handle", OSError(errno.ESTALE, "Stale file handle"), Failure.STORAGE),
    ("too many open files", OSError(errno.EMFILE, "Too many open files"), Failure.STORAGE),
    ("read-only file system", OSError(errno.EROFS, "Read-only file system"), Failure.ACCESS),
    ("permission", PermissionError(errno.EACCES, "Permission denied"), Failure.ACCESS),
    ("operation not permitted", OSError(errno.EPERM, "Operation not permitted"), Failure.ACCESS),
    ("permission without errno", PermissionError("denied"), Failure.ACCESS),
    ("removed", FileNotFoundError(errno.ENOENT, "No such file or directory"), Failure.MISSING),
    ("not a folder", OSError(errno.ENOTDIR, "Not a directory"), Failure.MISSING),
    # the network
    ("connection refused", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Failure.UNREACHABLE),
    ("timeout", TimeoutError("timed out"), Failure.UNREACHABLE),
    # object-store clients, known by name (spikestore does not import them)
    ("botocore no credentials", _named("NoCredentialsError")("Unable to locate credentials"), Failure.CREDENTIALS),
    ("botocore endpoint", _named("EndpointConnectionError")("Could not connect"), Failure.UNREACHABLE),
    ("aiohttp connector", _named("ClientConnectorError", OSError)("Cannot connect"), Failure.UNREACHABLE),
    ("s3fs wraps a timeout", _wrapped(_named("ReadTimeoutError")("read timeout"), OSError("request failed")),
     Failure.UNREACHABLE),
    ("s3fs wraps missing credentials", _wrapped(_named("PartialCredentialsError")("partial"), OSError("no")),
     Failure.CREDENTIALS),
    ("fsspec: no such bucket", FileNotFoundError("my-bucket/run.zarr"), Failure.MISSING),
    # bytes that cannot be made sense of
    ("JSON", _json_error(), Failure.UNREADABLE),
    ("not UTF-8", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), Failure.UNREADABLE),
    ("schema", _schema_error(), Failure.UNREADABLE),
    ("h5py: object missing", KeyError("Unable to open object (component not found)"), Failure.UNREADABLE),
    ("h5py: HDF5 error", RuntimeError("Unable to read attribute (bad object header version)"), Failure.UNREADABLE),
    ("h5py: OSError without errno", OSError("Can't read data (wrong B-tree signature)"), Failure.UNREADABLE),
    ("zarr refuses metadata", ValueError("Invalid value for 'zarr_format'"), Failure.UNREADABLE),
    ("a wrong type in a document", TypeError("'int' object is not subscriptable"), Failure.UNREADABLE),
    # spikestore's own errors
    ("damage", errors.DamagedStoreError("chunk 3 is missing"), Failure.DAMAGE),
    ("checksum", errors.ChecksumError("crc32c mismatch"), Failure.DAMAGE),
    ("format", errors.FormatError("format_version 9 is newer"), Failure.DAMAGE),
    ("storage error", errors.StorageError("endpoint did not answer"), Failure.STORAGE),
    ("storage error, unreachable", _wrapped(TimeoutError(), errors.StorageError("no answer")), Failure.UNREACHABLE),
    ("read-only error", errors.ReadOnlyError(errno.EACCES, "denied", "f"), Failure.ACCESS),
    ("no store", errors.StoreNotFoundError("no store at x"), Failure.MISSING),
    ("writer's storage", errors.WriterError("the disk is full"), Failure.STORAGE),
    ("a stream failed", errors.StreamFailedError("stream 'output/1' stopped"), Failure.REFUSED),
    ("closed", errors.StoreClosedError("run is closed"), Failure.REFUSED),
    ("bad argument", errors.InvalidArgumentError("chunk_records must be positive"), Failure.REFUSED),
    # neither storage nor data
    ("a bug", AttributeError("'NoneType' object has no attribute 'shape'"), Failure.OTHER),
    ("out of memory", MemoryError(), Failure.INTERRUPT),
    ("interrupt", KeyboardInterrupt(), Failure.INTERRUPT),
    ("exit", SystemExit(1), Failure.INTERRUPT),
]


@pytest.mark.parametrize(("exc", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_exception_has_one_meaning(exc, expected):
    assert classify(exc) is expected


def test_a_real_h5py_error_for_a_file_that_is_not_hdf5_is_unreadable_not_storage(tmp_path):
    exc = _h5py_error(tmp_path)
    assert classify(exc) is Failure.UNREADABLE
    assert not is_storage(exc)


STORAGE = {Failure.ACCESS, Failure.CREDENTIALS, Failure.UNREACHABLE, Failure.STORAGE}
STOPS_WRITER = STORAGE | {Failure.MISSING, Failure.INTERRUPT}


@pytest.mark.parametrize(("exc", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_storage_failures_are_never_damage_and_stop_a_writer(exc, expected):
    assert is_storage(exc) is (expected in STORAGE)
    assert classify(exc).storage_failed is (expected in STORAGE)
    assert stops_writer(exc) is (expected in STOPS_WRITER)


@pytest.mark.parametrize(("exc", "writing", "cls", "fix"), [
    (OSError(errno.ENOSPC, "No space left on device", "/d/s.zarr"), True, errors.WriterError, "free disk space"),
    (OSError(errno.ENOSPC, "No space left on device", "/d/s.zarr"), False, errors.StorageError, "free disk space"),
    (OSError(errno.EROFS, "Read-only file system", "/d"), True, errors.ReadOnlyError, "record to a writable folder"),
    (PermissionError(errno.EACCES, "Permission denied", "/d/s.zarr/zarr.json"), False, errors.ReadOnlyError,
     "check the permissions"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone"), True, errors.StoreNotFoundError,
     "does not exist"),
    (_named("NoCredentialsError")("Unable to locate credentials"), False, errors.ReadOnlyError, None),
    (TimeoutError("timed out"), False, errors.StorageError, None),
])
def test_a_storage_failure_becomes_the_error_of_its_kind_with_its_errno_and_fix(exc, writing, cls, fix):
    err = storage_error(exc, "cannot read the store", writing=writing)
    assert type(err) is cls and err.__cause__ is exc
    assert "cannot read the store" in str(err)  # (an OSError shows its errno first)
    if isinstance(exc, OSError) and exc.errno is not None and isinstance(err, OSError):
        assert err.errno == exc.errno and err.filename == exc.filename
    if fix is not None:
        assert fix in str(err)


def test_a_fix_given_by_the_caller_replaces_the_one_for_the_errno():
    err = storage_error(OSError(errno.ENOSPC, "full"), "cannot write x", writing=True, fix="do this")
    assert str(err) == "cannot write x; do this"
