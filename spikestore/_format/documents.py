"""The JSON documents of the on-disk format (version 1): what they hold, and their validation.

Root and stream documents live in the group attributes under
:data:`ATTRS_KEY`; they are created here and validated against the JSON
Schemas shipped in ``schemas/``. ``docs/format.md`` §2-§3 is the prose version.
"""

from __future__ import annotations

import functools
import json
import socket
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from spikestore._format.checks import root_problems, stream_problems
from spikestore._format.names import legacy_stream_node, split_key, stream_node
from spikestore.errors import (
    DamagedStoreError,
    FormatError,
    InvalidArgumentError,
    ReadOnlyError,
    SpikestoreError,
    StorageError,
    StoreNotFoundError,
)

__all__ = [
    "ATTRS_KEY",
    "DAMAGE_ADVICE",
    "FORMAT_VERSION",
    "INDEX_ARRAYS",
    "RANKED_FORMAT_VERSION",
    "check_no_root",
    "damaged",
    "doc_location",
    "has_root",
    "library_versions",
    "load_doc",
    "load_stream_doc",
    "new_root_doc",
    "new_stream_doc",
    "now_iso",
    "storage_failed",
    "validate_doc",
]

#: Version of the on-disk layout written by this library. Version 2 adds an
#: identity frame to every chunk (docs/format.md §6, §9); version 1 stores still
#: read, and become version 2 when appended to.
FORMAT_VERSION = 2
#: Version of a store recorded by several ranks of a process group: a root
#: document with ``ranks`` (docs/format.md §1.2). A reader of version 2 would
#: show rank 0 alone without a word, so such a root says 3, and one-process
#: stores stay version 2, byte for byte. The newest version this library reads.
RANKED_FORMAT_VERSION = 3
#: Name of the attribute (in the root group and in each stream group) that
#: holds spikestore's JSON document.
ATTRS_KEY = "spikestore"
#: Per-record index arrays of each stream, with their numpy dtypes.
INDEX_ARRAYS: dict[str, str] = {"step": "int64", "call": "int32", "time": "float64"}
#: What every damage message ends with.
DAMAGE_ADVICE = ("The store is damaged: run `spikestore verify {store}` to list every problem, "
                 "and restore the store from a copy if it has one")
#: What h5py and the JSON parser raise for metadata they cannot read (UnicodeDecodeError
#: and json's JSONDecodeError are ValueErrors; h5py maps HDF5's errors to the others).
_READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def now_iso() -> str:
    """Current UTC time as an ISO 8601 string (what every timestamp uses)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the bytes on disk.

    Looked up once per process: ``importlib.metadata`` scans and parses
    package metadata (~30 ms), which a store created per run should not pay.
    """
    return dict(_library_versions())


@functools.cache
def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in ("spikestore", "numpy", "numcodecs", "zarr", "h5py", "torch", "numba"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def new_root_doc(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The root document of a store just created by a writer."""
    import os

    meta = {} if metadata is None else metadata
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"Store metadata must be JSON-serialisable (dicts, lists, str, finite numbers): {exc}"
        ) from exc
    now = now_iso()
    return {
        "format_version": FORMAT_VERSION,
        "created": now,
        "versions": library_versions(),
        "metadata": meta,
        "streams": [],
        "writer": {
            "status": "open",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "opened": now,
            "closed": None,
            "dropped": 0,
        },
    }


def new_stream_doc(key: str, index_chunk_records: int,
                   index_codecs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The document of a stream that has no records yet."""
    quantity, layer = split_key(key)
    return {
        "quantity": quantity,
        "layer": layer,
        "count": 0,
        "segments": [],
        "index": {"chunk_records": index_chunk_records, "codecs": index_codecs},
        "selection": None,
        "attrs": {},
    }


@functools.cache
def _validator(name: str) -> Any:
    # Building a validator checks the schema itself; doing that once per kind
    # instead of per document makes opening a store ~15x faster.
    import jsonschema

    schema = _schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@functools.cache
def _schema(name: str) -> dict[str, Any]:
    # Installed wheels carry the schemas inside the package; a source checkout
    # keeps them in the top-level schemas/ folder.
    packaged = resources.files("spikestore").joinpath("schemas", f"{name}.schema.json")
    if packaged.is_file():
        return json.loads(packaged.read_text(encoding="utf-8"))
    source = Path(__file__).resolve().parents[2] / "schemas" / f"{name}.schema.json"
    return json.loads(source.read_text(encoding="utf-8"))


def _schema_problem(doc: Any, kind: str, where: str) -> str | None:
    """What in ``doc`` breaks its JSON Schema, or ``None``; a newer format raises ``FormatError``."""
    import jsonschema

    version = doc.get("format_version") if isinstance(doc, dict) else None
    if kind == "root" and isinstance(version, int) and version > RANKED_FORMAT_VERSION:
        raise FormatError(
            f"{where}: format_version {version} is newer than this "
            f"spikestore understands ({RANKED_FORMAT_VERSION}); upgrade spikestore.")
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(doc))
    if error is None:
        return None
    loc = "/".join(str(p) for p in error.absolute_path) or "<document>"
    return f"the {kind} document is invalid at {loc}: {error.message}"


def validate_doc(doc: Any, kind: str, where: str) -> dict[str, Any]:
    """Check a root or stream document against its JSON Schema (what a writer is about to write).

    Documents read from a store go through :func:`load_doc`, which also
    checks their consistency and calls every failure damage.

    Parameters
    ----------
    doc
        The parsed JSON document.
    kind
        ``"root"`` or ``"stream"``.
    where
        A path or key that names the document in the error message.

    Raises
    ------
    FormatError
        When the document does not follow the schema, or has a newer format version.
    """
    problem = _schema_problem(doc, kind, where)
    if problem is not None:
        raise FormatError(f"{where}: {problem}")
    return doc


def doc_location(store: Path, node: str) -> str:
    """Where the document of group ``node`` lives, for messages: a ``zarr.json`` or an HDF5 attribute."""
    if store.is_dir():  # a Zarr store is a folder, an HDF5 store a file (format.md §1, §10)
        return str(store / node / "zarr.json") if node else str(store / "zarr.json")
    return f"{store}, group /{node}, attribute {ATTRS_KEY!r}"


def damaged(store: Path, where: str, what: str) -> DamagedStoreError:
    """The error for damaged metadata: which file, what is wrong in it, what to do."""
    return DamagedStoreError(f"{where}: {what}. {DAMAGE_ADVICE.format(store=store)}")


def load_doc(backend: Any, node: str, kind: str, key: str | None = None) -> dict[str, Any] | None:
    """The document of group ``node`` of an opened store, read and checked.

    The one way spikestore reads a document (the reader, ``verify`` and
    ``Store(mode="a")``): schema, consistency (:mod:`spikestore._format.checks`)
    and the rules of ``docs/format.md`` §3 for a group without a document.

    Parameters
    ----------
    backend
        The store's :class:`~spikestore.backends.Backend` (``read_doc`` and ``inspect`` are used).
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
    """
    where = doc_location(backend.path, node)
    try:
        doc = backend.read_doc(node)
        if doc is None:
            _check_absent(backend, node, kind, where)
            return None
    except DamagedStoreError:
        raise
    except SpikestoreError as exc:
        if type(exc) is not FormatError:  # a closed store, say: not about the file
            raise
        raise damaged(backend.path, where, str(exc)) from None
    except _READ_ERRORS as exc:
        raise damaged(backend.path, where, f"it cannot be read ({type(exc).__name__}: {exc})") from None
    problem = _schema_problem(doc, kind, where)
    if problem is not None:
        raise damaged(backend.path, where, problem)
    problems = root_problems(doc) if kind == "root" else stream_problems(doc, key)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise damaged(backend.path, where, "; ".join(problems[:3]) + more)
    return doc


def _check_absent(backend: Any, node: str, kind: str, where: str) -> None:
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


def has_root(backend: Any) -> bool:
    """Whether the store has a root document (``backend.exists()``); damage when its root cannot be read.

    Storage that fails (:func:`storage_failed`) is raised as it is: it says nothing about the store.
    """
    try:
        return bool(backend.exists())
    except (SpikestoreError, *_READ_ERRORS) as exc:
        if storage_failed(exc) or isinstance(exc, StoreNotFoundError):  # (a bucket that is not there)
            raise
        raise damaged(backend.path, doc_location(backend.path, ""),
                      f"the root group cannot be read ({type(exc).__name__}: {exc})") from None


def storage_failed(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage failed (unreachable, access denied) rather than anything about the store.

    Such an error is never turned into damage: the store behind it may be
    intact (``docs/object-storage.md`` §4).
    """
    return isinstance(exc, (StorageError, ReadOnlyError))


def check_no_root(backend: Any) -> None:
    """For a store without a root document: raise when it lost one, return when it never had one.

    A root whose metadata is missing altogether (no ``zarr.json``) while it holds
    Zarr groups lost it; a root with metadata but no document, or a file that
    cannot be read at all, is not a spikestore store (``StoreNotFoundError``).

    Raises
    ------
    DamagedStoreError
        Naming the missing file.
    """
    where = doc_location(backend.path, "")
    try:
        info = backend.inspect("")
        if info is not None and info.doc:
            raise damaged(backend.path, where, "the root document is there but cannot be read")
        groups = [] if info is None or info.meta else [
            m for m in info.members if getattr(backend.inspect(m), "meta", False)]
    except DamagedStoreError:
        raise
    except SpikestoreError as exc:
        if storage_failed(exc):  # the storage did not answer: no answer about the store either
            raise
        return  # nothing readable there: not a store
    except _READ_ERRORS:
        return
    if groups:
        raise damaged(backend.path, where, f"it is missing, but the store holds groups {', '.join(groups)}")


def load_stream_doc(backend: Any, key: str) -> tuple[str, dict[str, Any] | None]:
    """Where stream ``key``'s group is, and its checked document: ``(node, doc)``.

    Looks at :func:`~spikestore._format.names.stream_node`, then at a
    :func:`~spikestore._format.names.legacy_stream_node` (HDF5 stores of
    earlier versions); gives ``(stream_node(key), None)`` for a stream
    listed but not committed yet. Raises as :func:`load_doc`.
    """
    node = stream_node(key)
    doc = load_doc(backend, node, "stream", key)
    legacy = legacy_stream_node(key)
    if doc is None and legacy is not None:
        old = load_doc(backend, legacy, "stream", key)
        if old is not None:
            return legacy, old
    return node, doc
