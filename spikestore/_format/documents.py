"""The JSON documents of the on-disk format (version 1): what they hold, and their validation.

Root and stream documents live in the group attributes under
:data:`ATTRS_KEY`; they are created here and validated against the JSON
Schemas shipped in ``schemas/``. ``docs/format.md`` §2-§3 is the prose version.
"""

from __future__ import annotations

import functools
import json
import socket
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from spikestore._format.names import split_key
from spikestore.errors import FormatError, InvalidArgumentError

__all__ = [
    "ATTRS_KEY",
    "FORMAT_VERSION",
    "INDEX_ARRAYS",
    "library_versions",
    "new_root_doc",
    "new_stream_doc",
    "now_iso",
    "validate_doc",
]

#: Version of the on-disk layout written by this library.
FORMAT_VERSION = 1
#: Name of the attribute (in the root group and in each stream group) that
#: holds spikestore's JSON document.
ATTRS_KEY = "spikestore"
#: Per-record index arrays of each stream, with their numpy dtypes.
INDEX_ARRAYS: dict[str, str] = {"step": "int64", "call": "int32", "time": "float64"}

def now_iso() -> str:
    """Current UTC time as an ISO 8601 string (what every timestamp uses)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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


def validate_doc(doc: Any, kind: str, where: str) -> dict[str, Any]:
    """Validate a root or stream document against its JSON Schema.

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
        When the document does not follow the schema (a damaged store, a
        newer format version, or something that is not a spikestore store).
    """
    import jsonschema

    version = doc.get("format_version") if isinstance(doc, dict) else None
    if kind == "root" and isinstance(version, int) and version > FORMAT_VERSION:
        raise FormatError(
            f"{where}: format_version {version} is newer than this "
            f"spikestore understands ({FORMAT_VERSION}); upgrade spikestore.")
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(doc))
    if error is not None:
        loc = "/".join(str(p) for p in error.absolute_path) or "<document>"
        raise FormatError(
            f"{where}: spikestore {kind} metadata is invalid at {loc}: {error.message}. "
            "The store is damaged or was not written by spikestore."
        ) from None
    return doc
