"""The on-disk format (the version written: :data:`FORMAT_VERSION`): names, JSON documents, record layouts.

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
    damaged,
    document_problems,
    library_versions,
    new_root_doc,
    new_stream_doc,
    now_iso,
    validate_doc,
)
from spikestore._format.names import (
    check_quantity,
    escape_layer,
    join_key,
    rank_part,
    segment_array_name,
    segment_array_number,
    split_key,
    stream_node,
    unbounded_stream_node,
    unescape_layer,
)

__all__ = [
    "ATTRS_KEY",
    "DAMAGE_ADVICE",
    "FORMAT_VERSION",
    "INDEX_ARRAYS",
    "RANKED_FORMAT_VERSION",
    "check_quantity",
    "damaged",
    "document_problems",
    "escape_layer",
    "join_key",
    "library_versions",
    "new_root_doc",
    "new_stream_doc",
    "now_iso",
    "rank_part",
    "segment_array_name",
    "segment_array_number",
    "split_key",
    "stream_node",
    "unbounded_stream_node",
    "unescape_layer",
    "validate_doc",
]
