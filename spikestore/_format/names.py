"""Names of the on-disk format (version 1): stream keys, group paths, segment names.

The single place that knows how a stream key such as ``"output/features.0"``
maps to a group path. ``docs/format.md`` §1 is the prose version of the same
rules; keep the two in step.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from spikestore.errors import InvalidArgumentError

__all__ = [
    "check_quantity",
    "escape_layer",
    "join_key",
    "segment_array_name",
    "split_key",
    "stream_node",
    "unescape_layer",
]

_QUANTITY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
# Characters left as they are in a layer's group name; everything else,
# including "%", "/", spaces and non-ASCII, becomes %XX of its UTF-8 bytes.
_SAFE = "._-"
# Node names that would collide with a backend's own files.
_RESERVED = frozenset({"zarr.json"})


def escape_layer(layer: str) -> str:
    """Return the group name that stores ``layer``.

    Layer names come from ``nn.Module.named_modules()`` and may be empty (the
    network itself), contain ``/`` or be any unicode string. Zarr and HDF5
    node names may not. The rule is reversible and documented in
    ``docs/format.md``: percent-encode (UTF-8) every character outside
    ``[A-Za-z0-9._~-]``; the empty name becomes a lone ``%``; a leading ``.``
    or ``_`` is percent-encoded too, so ``.``, ``..`` and ``__*`` never
    appear; and the reserved metadata name ``zarr.json`` becomes ``%7Aarr.json``.
    """
    if not isinstance(layer, str):
        raise InvalidArgumentError(f"layer name must be a str, not {type(layer).__name__}")
    if layer == "":
        return "%"
    name = quote(layer, safe=_SAFE)
    if name[0] in "._" or name in _RESERVED:
        name = f"%{ord(name[0]):02X}{name[1:]}"
    return name


def unescape_layer(name: str) -> str:
    """Invert :func:`escape_layer`."""
    return "" if name == "%" else unquote(name)


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


def segment_array_name(number: int) -> str:
    """Name of the ``number``-th segment array inside a stream group."""
    return f"seg{number:06d}"
