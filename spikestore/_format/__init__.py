"""The on-disk format, version 1: names and paths, JSON documents, record layouts.

Everything that decides what a store looks like on disk, and nothing that
reads or writes one. ``docs/format.md`` is the prose version.
"""

from __future__ import annotations

from spikestore._format.documents import (
    ATTRS_KEY,
    DAMAGE_ADVICE,
    FORMAT_VERSION,
    INDEX_ARRAYS,
    RANKED_FORMAT_VERSION,
    check_no_root,
    damaged,
    doc_location,
    has_root,
    library_versions,
    load_doc,
    load_stream_doc,
    new_root_doc,
    new_stream_doc,
    now_iso,
    validate_doc,
)
from spikestore._format.names import (
    check_quantity,
    escape_layer,
    join_key,
    legacy_stream_node,
    rank_part,
    segment_array_name,
    split_key,
    stream_node,
    unescape_layer,
)

__all__ = [
    "ATTRS_KEY",
    "DAMAGE_ADVICE",
    "FORMAT_VERSION",
    "INDEX_ARRAYS",
    "RANKED_FORMAT_VERSION",
    "check_no_root",
    "check_quantity",
    "damaged",
    "doc_location",
    "escape_layer",
    "has_root",
    "join_key",
    "legacy_stream_node",
    "library_versions",
    "load_doc",
    "load_stream_doc",
    "new_root_doc",
    "new_stream_doc",
    "now_iso",
    "rank_part",
    "segment_array_name",
    "split_key",
    "stream_node",
    "unescape_layer",
    "validate_doc",
]
