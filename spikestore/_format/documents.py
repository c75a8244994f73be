"""The JSON documents of the on-disk format: what they hold, and their validation.

Root and stream documents live in the group attributes under
:data:`ATTRS_KEY`; they are created here and validated against the JSON
Schemas shipped in ``schemas/``. ``docs/format.md`` §2-§3 is the prose version.
Nothing here reads or writes a store: the read side loads documents
(:mod:`spikestore._read.documents`) and checks them with
:func:`document_problems`; the writer validates what it writes with
:func:`validate_doc`.
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
from spikestore._format.names import split_key
from spikestore.errors import DamagedStoreError, FormatError, InvalidArgumentError

__all__ = [
    "ATTRS_KEY",
    "DAMAGE_ADVICE",
    "FORMAT_VERSION",
    "INDEX_ARRAYS",
    "RANKED_FORMAT_VERSION",
    "damaged",
    "document_problems",
    "library_versions",
    "new_root_doc",
    "new_stream_doc",
    "now_iso",
    "validate_doc",
]

#: Version of the on-disk layout written by this library. Version 2 binds every
#: chunk to its place by a chunk identity (docs/format.md §6, §9); version 1
#: stores still read, and become version 2 when appended to.
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
    # JSON Schema calls 40.0 an integer; a count or a size must be a JSON integer (docs/format.md §2).
    strict = jsonschema.validators.extend(cls, type_checker=cls.TYPE_CHECKER.redefine("integer", _is_integer))
    return strict(schema)


def _is_integer(_checker: Any, value: Any) -> bool:
    """Whether ``value`` is a JSON integer as parsed: a Python ``int``, never a float nor a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


@functools.cache
def _schema(name: str) -> dict[str, Any]:
    # Installed wheels carry the schemas inside the package; a source checkout
    # keeps them in the top-level schemas/ folder.
    packaged = resources.files("spikestore").joinpath("schemas", f"{name}.schema.json")
    if packaged.is_file():
        text = packaged.read_text(encoding="utf-8")
    else:
        text = (Path(__file__).resolve().parents[2] / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


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

    Documents read from a store are checked by :func:`document_problems`,
    which also checks their consistency, and whose every finding is damage.

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
    checked: dict[str, Any] = doc  # (a schema that passed says: an object)
    return checked


def damaged(store: object, where: str, what: str) -> DamagedStoreError:
    """The error for damaged metadata: which file, what is wrong in it, what to do.

    ``problem`` of the error holds ``where`` and ``what`` alone, without the
    advice to run ``spikestore verify`` (what ``verify`` itself reports).
    """
    problem = f"{where}: {what}"
    err = DamagedStoreError(f"{problem}. {DAMAGE_ADVICE.format(store=store)}")
    err.problem = problem
    return err


def document_problems(doc: Any, kind: str, where: str, key: str | None = None) -> list[str]:
    """What is wrong with a document read from a store: its schema, then its consistency.

    Parameters
    ----------
    doc
        The parsed JSON document.
    kind
        ``"root"`` or ``"stream"``.
    where
        Names the document in the error message.
    key
        For a stream, the key the root lists it under (the document must name it).

    Returns
    -------
    list of str
        One phrase per problem; empty when the document is sound.

    Raises
    ------
    FormatError
        For a root document of a newer format version than this spikestore reads.
    """
    problem = _schema_problem(doc, kind, where)
    if problem is not None:
        return [problem]
    return root_problems(doc) if kind == "root" else stream_problems(doc, key)
