"""Zarr v3 backend: stores laid out exactly as zarr lays them out, written chunk by chunk.

Array metadata comes from zarr's own ``ArrayV3Metadata`` (so each
``zarr.json`` is exactly what ``zarr.create_array`` writes); chunks and
documents are written as raw, pre-encoded bytes. Zarr's per-slice
``array[i] = x`` path is never used: it re-encodes and rewrites metadata on
every call.

The bytes go through :class:`~spikestore.backends._keys.Keys`: local files
written directly (:class:`~spikestore.backends._keys.LocalKeys`), or any
zarr store, such as ``FsspecStore`` for ``s3://``
(:class:`~spikestore.backends._remote.ZarrStoreKeys`). The local fast path
stays because zarr's ``LocalStore`` costs a trip through zarr's event loop
and thread pool per key (``docs/object-storage.md`` §5 has the A/B figures).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from spikestore._failures import classify
from spikestore._format import ATTRS_KEY, damaged
from spikestore._format.checks import MAX_DOCUMENT_BYTES, max_stored_chunk_bytes
from spikestore.backends._base import ArraySpec, NodeInfo
from spikestore.backends._keys import Keys, LocalKeys
from spikestore.backends._location import StoreURL
from spikestore.codecs._chunk import codec_from_config
from spikestore.errors import DamagedStoreError, FormatError, InvalidArgumentError, ReadOnlyError

__all__ = ["ZarrBackend"]

_META = "zarr.json"


def _key(node: str, name: str) -> str:
    return f"{node}/{name}" if node else name


@functools.lru_cache(maxsize=256)
def _array_meta(chunks: tuple[int, ...], record_shape: tuple[int, ...], dtype_str: str,
                codec_json: str) -> str:
    """The ``zarr.json`` of an empty array, as zarr itself writes it (cached: ~1 ms each)."""
    from zarr.codecs import BytesCodec
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.dtype import get_data_type_from_native_dtype
    from zarr.core.metadata.v3 import ArrayV3Metadata

    dtype = np.dtype(dtype_str)
    meta = ArrayV3Metadata(
        shape=(0, *record_shape),
        data_type=get_data_type_from_native_dtype(dtype),
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        # "." keeps every chunk file in the array's own folder: with "/", each
        # new chunk of an n-d array needed n new nested folders (c/7/0/0/0/0),
        # a quarter of the writer's time on 5-d spike records.
        chunk_key_encoding={"name": "default", "configuration": {"separator": "."}},
        fill_value=0,
        codecs=[BytesCodec(endian="little" if dtype.itemsize > 1 else None),
                *codec_from_config(json.loads(codec_json)).zarr_codecs()],
        attributes={},
        dimension_names=None,
    )
    return meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes().decode()


def _checked_array_meta(be: ZarrBackend, node: str, *, report: bool = False
                        ) -> tuple[dict[str, Any] | None, list[str]]:
    """An array's ``zarr.json``, checked with zarr's own metadata class.

    Raises :class:`DamagedStoreError` naming the file when it is missing or
    zarr would refuse it; with ``report``, returns ``(None, [problem])`` instead.
    """
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
    from zarr.core.metadata.v3 import ArrayV3Metadata

    raw = be.get(_key(node, _META))
    if raw is None:
        what = "it is missing"
    else:
        try:
            parsed = ArrayV3Metadata.from_dict(json.loads(raw))  # it pops what it reads: a copy of its own
            if not isinstance(parsed.chunk_key_encoding, DefaultChunkKeyEncoding):
                raise ValueError(f"chunk key encoding {parsed.chunk_key_encoding} is not 'default'")
            return json.loads(raw), []
        except Exception as exc:  # noqa: BLE001 - zarr raises many kinds for metadata it refuses
            what = f"zarr cannot open it as an array ({type(exc).__name__}: {exc})"
    if report:
        return None, [f"{_META}: {what}"]
    raise be.damage_error(node, what)


def _array_problems(meta: dict[str, Any], expect: ArraySpec, length: int) -> list[str]:
    """How a valid array ``zarr.json`` disagrees with the array a document describes (format.md §4-§6)."""
    from zarr.core.metadata.v3 import ArrayV3Metadata

    got = ArrayV3Metadata.from_dict(json.loads(json.dumps(meta)))
    chunks = (expect.chunk_records, *(max(1, d) for d in expect.record_shape))
    want = ArrayV3Metadata.from_dict(json.loads(_array_meta(
        chunks, tuple(expect.record_shape), np.dtype(expect.dtype).str,
        json.dumps(expect.codec.config, sort_keys=True))))
    problems = []
    if got.shape[1:] != tuple(expect.record_shape):
        problems.append(f"shape {list(got.shape)} holds records of shape {list(got.shape[1:])}, "
                        f"the document says {list(expect.record_shape)}")
    elif got.shape[0] < length:
        problems.append(f"it holds {got.shape[0]} records, the document commits {length}")
    if got.chunk_grid != want.chunk_grid:
        problems.append(f"chunk grid {got.chunk_grid} differs from the document's {want.chunk_grid}")
    if got.data_type != want.data_type:
        problems.append(f"data type {got.data_type} differs from the document's {want.data_type}")
    if _codecs(got, expect.dtype) != _codecs(want, expect.dtype):
        problems.append(f"codecs {list(got.codecs)} differ from the document's codec {expect.codec.config}")
    return problems


def _codecs(meta: Any, dtype: np.dtype) -> list[Any]:
    """An array's codec chain, with what cannot matter for its dtype left out (the byte order of bytes)."""
    from zarr.codecs import BytesCodec

    return [BytesCodec() if isinstance(c, BytesCodec) and np.dtype(dtype).itemsize == 1 else c
            for c in meta.codecs]


def _itemsize(data_type: Any) -> int:
    """Bytes of one value of a zarr ``data_type`` (16, the most of any, when it names none numpy knows)."""
    try:
        return int(np.dtype(data_type).itemsize) if isinstance(data_type, str) else 16
    except TypeError:
        return 16


class ZarrBackend:
    """Backend over a Zarr v3 store, through :class:`~spikestore.backends._keys.Keys`.

    Different arrays may be written from several threads at once: every
    write is its own key, and the shared caches are dicts and sets that the
    GIL keeps consistent.

    Parameters
    ----------
    path
        The store's folder, or its :class:`~spikestore.backends.StoreURL`.
    writable, durable
        As in :func:`~spikestore.backends.open_backend`.
    keys
        Where the bytes go: by default local files under ``path``
        (:class:`~spikestore.backends._keys.LocalKeys`).
    """

    concurrent_writes = True
    codec_target = "zarr"

    def __init__(self, path: Path | StoreURL, *, writable: bool, durable: bool = False,
                 keys: Keys | None = None) -> None:
        self.path: Path | StoreURL = path if isinstance(path, StoreURL) else Path(path)
        self.writable = writable
        if keys is None:
            if isinstance(path, StoreURL):
                raise InvalidArgumentError(f"{path}: a store behind a URL is opened through open_backend, "
                                           "which gives it the object store's keys")
            keys = LocalKeys(Path(path), durable=durable)
        self.keys: Keys = keys
        # Whether commits must sync (the writer then commits one stream at a time): never
        # behind a URL, where every acknowledged put is durable already.
        self.durable = durable and self.keys.durable
        self._array_meta: dict[str, dict[str, Any]] = {}
        self._chunk_suffix: dict[str, tuple[str, str]] = {}  # node -> (separator, trailing zeros)
        self._groups: set[str] = set()  # group nodes known to have their zarr.json

    # -- raw bytes -----------------------------------------------------------
    def get(self, key: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        """The bytes at ``key`` (``None``: none); more than ``limit`` of them is damage."""
        return self.keys.get(key, limit)

    def _set(self, key: str, data: bytes, *, in_place: bool = False) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.path} was opened read-only; write through spikestore.Store")
        self.keys.put(key, data, in_place=in_place)

    # -- protocol ------------------------------------------------------------
    def refresh(self) -> None:
        """Nothing to do: every read goes to the store's keys, never to a cache of them."""

    def exists(self) -> bool:
        return self.keys.has(_META)

    def read_doc(self, node: str) -> Any | None:
        meta = self._group_meta(node)
        if meta is None:
            return None
        attrs = meta.get("attributes", {})
        if not isinstance(attrs, dict):
            raise FormatError("its attributes are not a JSON object")
        if ATTRS_KEY not in attrs:
            if not node:
                return None  # a Zarr group, not a spikestore store
            raise FormatError("it holds no spikestore document")
        self._check_parents(node)
        return attrs[ATTRS_KEY]

    def _group_meta(self, node: str) -> dict[str, Any] | None:
        """A node's parsed ``zarr.json`` (``None`` when there is none)."""
        raw = self.get(_key(node, _META))
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError included
            raise FormatError(f"it is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise FormatError("it is not a JSON object")
        return meta

    def damage_error(self, node: str, what: str) -> DamagedStoreError:
        """The error for a damaged ``zarr.json`` at ``node``: which key, what is wrong, what to do."""
        return damaged(self.path, self.keys.where(_key(node, _META)), what)

    def _check_parents(self, node: str) -> None:
        """Every group above ``node`` has its ``zarr.json`` (the writer creates them first)."""
        parent = node.rsplit("/", 1)[0] if "/" in node else ""
        while parent and parent not in self._groups:
            if self.get(_key(parent, _META)) is None:
                raise FormatError(f"the metadata of the group above it, {self.keys.where(_key(parent, _META))}, "
                                  f"is missing, but that group holds {node!r}")
            self._groups.add(parent)
            parent = parent.rsplit("/", 1)[0] if "/" in parent else ""

    def write_doc(self, node: str, doc: Any) -> None:
        self._ensure_parent_group(node)
        body = {"zarr_format": 3, "node_type": "group", "attributes": {ATTRS_KEY: doc}}
        data = json.dumps(body, allow_nan=False).encode()
        try:
            self._set(_key(node, _META), data)
        except OSError as exc:
            # The root's final status matters most when the disk is full or the folder lost its
            # write permission, which is exactly when no new file can be made: overwrite the
            # existing document in place where that is safe (Keys.overwrite_in_page).
            if node or not self.writable or not classify(exc).storage_failed or not self._overwrite_root(data):
                raise

    def _overwrite_root(self, data: bytes) -> bool:
        """Overwrite the root's ``zarr.json`` in place; ``False`` when that cannot be done either."""
        try:
            return self.keys.overwrite_in_page(_META, data)
        except OSError:
            return False

    def _ensure_parent_group(self, node: str) -> None:
        """Give ``node``'s parent (a quantity group) its ``zarr.json`` if it has none yet."""
        parent = node.rsplit("/", 1)[0] if "/" in node else ""
        if not parent or parent in self._groups:
            return
        if self.get(_key(parent, _META)) is None:
            self._set(_key(parent, _META), json.dumps(
                {"zarr_format": 3, "node_type": "group", "attributes": {}}).encode())
        self._groups.add(parent)

    def create_array(self, node: str, spec: ArraySpec) -> None:
        # The zarr.json is built by zarr's own metadata class, so it is the
        # document zarr.create_array writes, without create_array's round
        # trips through zarr's event loop (~3 ms per array, 4 per stream).
        chunks = (spec.chunk_records, *(max(1, d) for d in spec.record_shape))
        template = _array_meta(chunks, tuple(spec.record_shape), np.dtype(spec.dtype).str,
                               json.dumps(spec.codec.config, sort_keys=True))
        if self.keys.is_node(node):  # a leftover of a crash: start empty, as overwrite=True does
            self.keys.delete_node(node)
        self._ensure_parent_group(node)
        meta = json.loads(template)
        self._set(_key(node, _META), template.encode())
        self._array_meta[node] = meta
        self._chunk_suffix.pop(node, None)

    def _meta_of(self, node: str) -> dict[str, Any]:
        meta = self._array_meta.get(node)
        if meta is None:
            checked = _checked_array_meta(self, node)[0]
            assert checked is not None  # (without report=True it raises instead)
            meta = self._array_meta[node] = checked
        return meta

    def inspect(self, node: str, expect: ArraySpec | None = None, length: int = 0) -> NodeInfo | None:
        if not self.keys.is_node(node):
            return None
        if expect is not None:
            if length == 0 and self.get(_key(node, _META)) is None:
                return None  # a writer killed while creating it: nothing is committed to it yet
            meta, problems = _checked_array_meta(self, node, report=True)
            if meta is not None:
                problems = _array_problems(meta, expect, length)
            return NodeInfo("array", meta is not None, problems=tuple(problems))
        members = self.keys.children(node)
        try:
            meta = self._group_meta(node)
        except FormatError:
            return NodeInfo("group", True, False, members)
        if meta is None:
            return NodeInfo("group", False, False, members)
        attrs = meta.get("attributes")
        return NodeInfo("array" if meta.get("node_type") == "array" else "group", True,
                        isinstance(attrs, dict) and ATTRS_KEY in attrs, members)

    def set_length(self, node: str, length: int, *, exact: bool = True) -> None:
        meta = self._meta_of(node)
        if not exact:
            # Grow to the end of the chunk holding the last row: the zarr.json
            # is rewritten once per chunk, not at every commit (4 of a commit's
            # 8 file replacements, ~1 ms a stream).
            per = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
            length = -(-length // per) * per
            if length <= meta["shape"][0]:
                return
        if meta["shape"][0] == length:
            return
        meta["shape"][0] = length
        self._set(_key(node, _META), json.dumps(meta).encode())

    def _chunk_key(self, node: str, chunk: int) -> str:
        # Chunks split axis 0 only: chunk i is "c<sep>i" then "<sep>0" per record axis.
        suffix = self._chunk_suffix.get(node)
        if suffix is None:
            meta = self._meta_of(node)
            sep = meta.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/")
            suffix = self._chunk_suffix[node] = (sep, f"{sep}0" * (len(meta["shape"]) - 1))
        sep, zeros = suffix
        return _key(node, f"c{sep}{chunk}{zeros}")

    def write_chunk(self, node: str, chunk: int, data: bytes, *, new: bool = False) -> None:
        self._set(self._chunk_key(node, chunk), data, in_place=new)

    def read_chunk(self, node: str, chunk: int) -> bytes | None:
        # A chunk file bigger than its codec may make it is damage, refused unread (a sparse file of GiB).
        meta = self._meta_of(node)
        shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        decoded = math.prod(shape) * _itemsize(meta.get("data_type"))
        return self.get(self._chunk_key(node, chunk), max_stored_chunk_bytes(decoded))

    def nbytes(self, node: str) -> int:
        return self.keys.nbytes(node)

    def sync(self) -> None:
        self.keys.sync()

    def close(self) -> None:
        """Nothing to release: every file is closed as soon as it is written."""
