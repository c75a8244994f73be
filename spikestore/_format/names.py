"""Names of the on-disk format: stream keys, group paths, segment names.

The single place that knows how a stream key such as ``"output/features.0"``
maps to a group path. ``docs/format.md`` §1 is the prose version of the same
rules; keep the two in step.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, unquote

from spikestore.errors import FormatError, InvalidArgumentError

__all__ = [
    "MAX_NAME_BYTES",
    "check_quantity",
    "escape_layer",
    "is_hashed_layer",
    "join_key",
    "rank_part",
    "segment_array_name",
    "segment_array_number",
    "split_key",
    "stream_node",
    "unbounded_stream_node",
    "unescape_layer",
]

_SEGMENT_PREFIX = "seg"
_SEGMENT_RE = re.compile(rf"^{_SEGMENT_PREFIX}(\d{{6}})$")
_QUANTITY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
# Characters left as they are in a layer's group name; everything else,
# including "%", "/", spaces and non-ASCII, becomes %XX of its UTF-8 bytes.
_SAFE = "._-"
# Node names that would collide with a backend's own files.
_RESERVED = frozenset({"zarr.json"})
#: Longest group name, in bytes, that the format writes (file systems' NAME_MAX).
MAX_NAME_BYTES = 255
# Marks a bounded (hashed) layer name. The plain rule never writes it: there,
# every "%" is followed by two uppercase hex digits, or stands alone ("").
_HASH_MARK = "%~"
_HASH_HEX = 64  # sha256
_PREFIX_BYTES = MAX_NAME_BYTES - len(_HASH_MARK) - _HASH_HEX  # 189


def _plain_escape(data: bytes) -> str:
    name = quote(data, safe=_SAFE)
    if name[0] in "._" or name in _RESERVED:
        name = f"%{ord(name[0]):02X}{name[1:]}"
    return name


def escape_layer(layer: str) -> str:
    """Return the group name that stores ``layer`` (at most 255 ASCII bytes).

    Layer names come from ``nn.Module.named_modules()`` and may be empty (the
    network itself), contain ``/`` or be any unicode string. Zarr and HDF5
    node names may not. The rule is documented in ``docs/format.md`` §1.1:

    1. the empty name becomes a lone ``%``;
    2. otherwise percent-encode every byte of the name's UTF-8 encoding
       outside ``[A-Za-z0-9._~-]`` (a lone surrogate, which strict UTF-8
       refuses, is encoded as its 3 bytes, ``errors="surrogatepass"``);
    3. a leading ``.`` or ``_`` is percent-encoded too, so ``.``, ``..`` and
       ``__*`` never appear, and the reserved metadata name ``zarr.json``
       becomes ``%7Aarr.json``;
    4. a result longer than 255 bytes (file systems refuse longer names) is
       cut to its first 189 bytes, never inside a ``%XX``, followed by ``%~``
       and the 64 hex digits of the SHA-256 of the name's bytes from step 2.

    Names of at most 255 bytes after step 3 are reversible
    (:func:`unescape_layer`).
    ``%~`` appears in no name from steps 1-3 (there every ``%`` is followed
    by two uppercase hex digits), so a bounded name collides with none of
    them, and two bounded names collide only if SHA-256 does.
    """
    if not isinstance(layer, str):
        raise InvalidArgumentError(f"layer name must be a str, not {type(layer).__name__}")
    if layer == "":
        return "%"
    data = layer.encode("utf-8", "surrogatepass")
    name = _plain_escape(data)
    if len(name) <= MAX_NAME_BYTES:
        return name
    cut = _PREFIX_BYTES
    split = name.rfind("%", cut - 2, cut)  # a %XX triple cut short: drop it whole
    if split != -1:
        cut = split
    return f"{name[:cut]}{_HASH_MARK}{hashlib.sha256(data).hexdigest()}"


def is_hashed_layer(name: str) -> bool:
    """Whether the group name ``name`` is a bounded (hashed, not reversible) layer name."""
    return _HASH_MARK in name


def unescape_layer(name: str) -> str:
    """Invert :func:`escape_layer`.

    Raises
    ------
    FormatError
        For a bounded name (:func:`is_hashed_layer`): it keeps only a prefix
        of the layer; take the layer from the stream document instead.
    """
    if is_hashed_layer(name):
        raise FormatError(
            f"group name {name!r} is a bounded (hashed) layer name and cannot be unescaped; "
            "read the layer from the stream document's 'layer' field")
    return "" if name == "%" else unquote(name, errors="surrogatepass")


def check_quantity(quantity: str) -> str:
    """Validate a quantity name (``output``, ``v_seq``...) and return it."""
    if (not isinstance(quantity, str) or not _QUANTITY_RE.match(quantity) or quantity.startswith("__")
            or quantity in _RESERVED):
        raise InvalidArgumentError(
            f"invalid quantity name {quantity!r}: use letters, digits, '_', '.', '-' "
            "(not starting with '.' or '__'), e.g. 'output' or 'v_seq'"
        )
    return quantity


def split_key(key: str) -> tuple[str, str]:
    """Split a stream key ``"quantity/layer"`` at its first ``/``.

    The layer part is taken verbatim, so layer names containing ``/`` (or
    the empty layer, key ``"output/"``) work.
    """
    if not isinstance(key, str) or "/" not in key:
        raise InvalidArgumentError(
            f"stream key {key!r} must look like 'quantity/layer', e.g. 'output/1'"
        )
    quantity, layer = key.split("/", 1)
    return check_quantity(quantity), layer


def join_key(quantity: str, layer: str) -> str:
    """Return the stream key of ``quantity`` recorded from ``layer``."""
    return f"{check_quantity(quantity)}/{layer}"


def stream_node(key: str) -> str:
    """Return the group path (relative to the root) of stream ``key``."""
    quantity, layer = split_key(key)
    return f"{quantity}/{escape_layer(layer)}"


def unbounded_stream_node(key: str) -> str | None:
    """The group path of ``key`` without the 255-byte bound (steps 1-3 of :func:`escape_layer`), if it differs.

    Only an HDF5 file can hold such a path (file systems refuse names over
    255 bytes; docs/format.md §1.1): a reader that finds no stream document at
    :func:`stream_node` looks here. ``None`` when the path is the same, or
    cannot be written.
    """
    quantity, layer = split_key(key)
    try:
        data = layer.encode("utf-8")
    except UnicodeEncodeError:
        return None
    name = _plain_escape(data) if layer else "%"
    return f"{quantity}/{name}" if len(name) > MAX_NAME_BYTES else None


def segment_array_name(number: int) -> str:
    """Name of the ``number``-th segment array inside a stream group (:func:`segment_array_number` reads it)."""
    return f"{_SEGMENT_PREFIX}{number:06d}"


def segment_array_number(name: str) -> int:
    """The number of the segment array called ``name`` (the inverse of :func:`segment_array_name`).

    Raises
    ------
    FormatError
        For a name :func:`segment_array_name` does not give.
    """
    found = _SEGMENT_RE.match(name)
    if found is None:
        raise FormatError(f"{name!r} is not a segment array's name (seg000000, seg000001, ...)")
    return int(found.group(1))


def rank_part(rank: int) -> str:
    """Folder, inside the root store, of the part recorded by ``rank`` > 0 (docs/format.md §1.2).

    Rank 0's part is the root store itself. ``__rank<r>`` can be no stream's
    quantity group (quantities never start with ``__``), so a part never
    collides with a stream.
    """
    if rank < 1:
        raise InvalidArgumentError(f"rank {rank}: only ranks 1, 2, ... have a part folder (rank 0 is the root)")
    return f"__rank{rank}"
