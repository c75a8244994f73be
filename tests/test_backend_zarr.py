"""The Zarr backend writes what zarr itself would, without going through zarr's I/O."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import spikestore
from spikestore.backends._base import ArraySpec
from spikestore.backends._zarr import ZarrBackend
from spikestore.codecs._chunk import codec_for


@pytest.mark.parametrize(("encoding", "dtype", "record_shape", "records"), [
    ("bits", "uint8", (8, 32, 16, 28, 4), 1),
    ("raw", "float32", (3,), 1000),
    ("raw", "float64", (), 16384),
    ("raw", "int16", (2, 0), 7),
    ("raw", "bool", (5,), 9),
    ("raw", "complex64", (1,), 3),
])
def test_array_metadata_is_what_zarr_create_array_writes(tmp_path: Path, encoding, dtype, record_shape,
                                                         records) -> None:
    codec = codec_for(encoding, np.dtype(dtype), record_bytes=10**6, row_bits=28 if encoding == "bits" else None)
    spec = ArraySpec(record_shape, np.dtype(dtype), records, codec)
    backend = ZarrBackend(tmp_path / "ours", writable=True)
    backend.create_array("g/a", spec)
    zarr.create_array(store=str(tmp_path / "theirs"), name="g/a", shape=(0, *record_shape),
                      chunks=(records, *(max(1, d) for d in record_shape)), dtype=dtype,
                      compressors=codec.zarr_codecs(), fill_value=0,
                      chunk_key_encoding={"name": "default", "separator": "."})
    ours = json.loads((tmp_path / "ours/g/a/zarr.json").read_text())
    theirs = json.loads((tmp_path / "theirs/g/a/zarr.json").read_text())
    assert ours == theirs
    assert json.loads((tmp_path / "ours/g/zarr.json").read_text())["node_type"] == "group"


def test_chunks_written_directly_read_back_through_zarr(tmp_path: Path) -> None:
    codec = codec_for("raw", np.dtype("float32"), record_bytes=10**6)
    backend = ZarrBackend(tmp_path / "s", writable=True)
    backend.create_array("a", ArraySpec((4,), np.dtype("float32"), 2, codec))
    data = np.arange(16, dtype=np.float32).reshape(4, 4)
    for i in range(2):
        backend.write_chunk("a", i, codec.encode(data[2 * i: 2 * i + 2]))
    backend.set_length("a", 4)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s/a", mode="r")[:], data)
    assert not list((tmp_path / "s").rglob("*.partial"))  # no temporary file left behind


def test_chunks_of_nd_arrays_sit_in_the_array_folder(tmp_path: Path) -> None:
    codec = codec_for("raw", np.dtype("float32"), record_bytes=10**6)
    backend = ZarrBackend(tmp_path / "s", writable=True)
    backend.create_array("a", ArraySpec((2, 3, 4), np.dtype("float32"), 1, codec))
    for i in range(3):
        backend.write_chunk("a", i, codec.encode(np.full((1, 2, 3, 4), i, np.float32)))
    backend.set_length("a", 3)
    assert sorted(p.name for p in (tmp_path / "s/a").iterdir()) == ["c.0.0.0.0", "c.1.0.0.0", "c.2.0.0.0",
                                                                  "zarr.json"]
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s/a", mode="r")[:, 0, 0, 0], [0, 1, 2])


def test_chunks_of_stores_with_nested_keys_still_read(tmp_path: Path) -> None:
    # Stores written before chunk keys used "." have "c/<i>/0/0" keys; the
    # key follows each array's own zarr.json.
    data = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    codec = codec_for("raw", np.dtype("float32"), record_bytes=10**6)
    arr = zarr.create_array(store=str(tmp_path / "s"), name="a", shape=data.shape, chunks=(1, 2, 2),
                            dtype="float32", compressors=codec.zarr_codecs(), fill_value=0,
                            chunk_key_encoding={"name": "default", "separator": "/"})
    arr[:] = data
    assert (tmp_path / "s/a/c/2/0/0").is_file()
    backend = ZarrBackend(tmp_path / "s", writable=False)
    np.testing.assert_array_equal(codec.decode(backend.read_chunk("a", 2), (1, 2, 2), "float32")[0], data[2])


def test_recreating_an_array_drops_chunks_left_by_a_crash(tmp_path: Path) -> None:
    codec = codec_for("raw", np.dtype("float32"), record_bytes=10**6)
    spec = ArraySpec((4,), np.dtype("float32"), 2, codec)
    backend = ZarrBackend(tmp_path / "s", writable=True)
    backend.create_array("a", spec)
    backend.write_chunk("a", 5, codec.encode(np.ones((2, 4), np.float32)))
    backend.create_array("a", spec)
    assert backend.read_chunk("a", 5) is None


def test_array_lengths_grow_by_whole_chunks_until_close(tmp_path: Path) -> None:
    # Commits rewrite a zarr.json only when a new chunk starts; the format lets
    # shapes run ahead of the count, and close() makes them exact.
    path = tmp_path / "s.zarr"
    rows = np.arange(6 * 5, dtype=np.float32).reshape(6, 5) / 7  # raw: several records per chunk
    with spikestore.Store(path, mode="w") as store:
        for i in range(3):
            store.append("v/x", rows[i], step=i)
        store.flush()
        seg = json.loads((path / "v/x/seg000000/zarr.json").read_text())
        step = json.loads((path / "v/x/step/zarr.json").read_text())
        per_seg = seg["chunk_grid"]["configuration"]["chunk_shape"][0]
        per_index = step["chunk_grid"]["configuration"]["chunk_shape"][0]
        assert per_seg > 6 and per_index > 6
        assert seg["shape"][0] == per_seg and step["shape"][0] == per_index  # one chunk's worth
        mtime = (path / "v/x/step/zarr.json").stat().st_mtime_ns
        for i in range(3, 6):
            store.append("v/x", rows[i], step=i)
        store.flush()
        assert (path / "v/x/step/zarr.json").stat().st_mtime_ns == mtime  # not rewritten
        live = spikestore.open(path)["v/x"]
        assert len(live) == 6
        np.testing.assert_array_equal(live[5], rows[5])
    for node in ("seg000000", "step", "call", "time"):
        assert json.loads((path / f"v/x/{node}/zarr.json").read_text())["shape"][0] == 6
    np.testing.assert_array_equal(zarr.open_array(path / "v/x/seg000000", mode="r")[:], rows)


@pytest.mark.parametrize("more", [1, 0])
def test_a_store_resumed_after_a_crash_has_exact_lengths_after_close(tmp_path: Path, more: int) -> None:
    # The writer dies between a flush and close(): its open segment keeps a
    # length rounded up to the chunk. Appending after reopening moves on to a
    # new segment, and the clean close sizes the old one exactly too.
    path = tmp_path / "s.zarr"
    crash = (
        "import os, numpy as np, spikestore\n"
        f"s = spikestore.Store({str(path)!r}, mode='w')\n"
        "for i in range(3):\n"
        "    s.append('v/x', np.full(5, (i + 1) / 7, np.float32), step=i)\n"
        "s.flush()\n"
        "os._exit(0)  # no close(), no atexit: what a kill leaves\n"
    )
    subprocess.run([sys.executable, "-c", crash], check=True, timeout=120)
    assert json.loads((path / "v/x/seg000000/zarr.json").read_text())["shape"][0] > 3
    with spikestore.Store(path, mode="a") as store:
        if more:  # (without, the store is closed with nothing new to commit)
            store.append("v/x", np.full(5, 4 / 7, np.float32), step=3)
    shapes = {p.parent.name: json.loads(p.read_text())["shape"][0] for p in (path / "v/x").glob("*/zarr.json")}
    n = 3 + more
    assert shapes == {"seg000000": 3, **({"seg000001": 1} if more else {}), "step": n, "call": n, "time": n}
    run = spikestore.open(path)["v/x"]
    np.testing.assert_array_equal(np.stack([run[i] for i in range(n)])[:, 0],
                                  np.arange(1, n + 1, dtype=np.float32) / 7)


def _tear_writes_under(path: Path, part: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every file written under ``path`` whose name holds ``part`` gets half its
    bytes, then the disk is 'full'."""
    import builtins

    real_open = builtins.open

    class Torn:
        def __init__(self, f: Any) -> None:
            self._f = f

        def write(self, data: bytes) -> int:
            self._f.write(bytes(data)[: len(data) // 2])
            self._f.flush()
            raise OSError(28, "No space left on device (injected)")

        def __enter__(self) -> Torn:
            return self

        def __exit__(self, *exc: Any) -> None:
            self._f.close()

    def torn_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode and str(path) in str(file) and part in str(file):
            return Torn(f)
        return f

    monkeypatch.setattr(builtins, "open", torn_open)


@pytest.mark.parametrize("resumed,torn", [(False, "seg000000"), (False, "step"), (True, "step")])
def test_a_write_torn_halfway_never_damages_committed_records(tmp_path: Path, monkeypatch, resumed,
                                                              torn) -> None:
    """Rewriting a chunk that holds committed records (the partly filled chunk at every
    flush, the last index chunk of a resumed store) must never expose half a chunk."""
    import torch

    path = tmp_path / "s.zarr"
    with spikestore.Store(path, chunk_bytes=64) as store:  # 8-byte packed records: 8 a chunk
        for i in range(3):
            store.set_step(i)
            store.append("output/1", torch.full((64,), float(i % 2)))
        store.flush()  # 3 records committed, their data and index chunks partly filled
        if resumed:
            store.close()
            store = spikestore.Store(path, mode="a")
        _tear_writes_under(path, torn, monkeypatch)
        for i in range(3, 5):
            store.set_step(i)
            store.append("output/1", torch.full((64,), float(i % 2)))
        with pytest.raises(spikestore.WriterError, match="No space left"):
            store.flush()
        monkeypatch.undo()
        with pytest.raises(spikestore.WriterError):
            store.close()
    s = spikestore.open(path)["output/1"]
    assert len(s) == 3 and list(s.steps) == [0, 1, 2]
    for i in range(3):
        np.testing.assert_array_equal(s[i], np.full(64, float(i % 2), np.float32))


def test_local_files_and_zarr_localstore_write_the_same_keys(tmp_path: Path) -> None:
    # The backend's bytes go through one small interface (Keys); local files (the
    # fast path) and any zarr store (zarr's LocalStore here; FsspecStore for s3://)
    # must leave byte-identical stores that each other reads.
    from zarr.storage import LocalStore

    from spikestore.backends._keys import LocalKeys
    from spikestore.backends._remote import ZarrStoreKeys

    codec = codec_for("raw", np.dtype("float32"), record_bytes=10**6)
    spec = ArraySpec((3,), np.dtype("float32"), 2, codec)
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    paths = {"files": tmp_path / "files", "zarr": tmp_path / "zarr"}
    keys = {"files": LocalKeys(paths["files"]),
            "zarr": ZarrStoreKeys(LocalStore(paths["zarr"]), str(paths["zarr"]))}
    for name, k in keys.items():
        be = ZarrBackend(paths[name], writable=True, keys=k)
        be.write_doc("", {"hello": 1})
        be.create_array("g/a", spec)
        be.write_chunk("g/a", 0, codec.encode(data[:2]), new=True)
        be.write_chunk("g/a", 1, codec.encode(data[2:]))
        be.set_length("g/a", 4)
        be.sync()
        assert be.inspect("g").members == ("a",) and be.inspect("nothing") is None
        assert be.nbytes("g/a") == sum(p.stat().st_size for p in (paths[name] / "g/a").iterdir())
    files = {n: sorted(p.relative_to(paths[n]).as_posix() for p in paths[n].rglob("*") if p.is_file())
             for n in paths}
    assert files["files"] == files["zarr"]
    for rel in files["files"]:
        assert (paths["files"] / rel).read_bytes() == (paths["zarr"] / rel).read_bytes()
    other = ZarrBackend(paths["files"], writable=False, keys=ZarrStoreKeys(LocalStore(paths["files"]), "x"))
    assert other.read_doc("") == {"hello": 1}
    np.testing.assert_array_equal(codec.decode(other.read_chunk("g/a", 1), (2, 3), "float32"), data[2:])
    keys["zarr"].delete_node("g/a")
    assert not keys["zarr"].is_node("g/a") and keys["zarr"].is_node("g")


def test_durable_means_fsync_for_local_files_only(tmp_path: Path) -> None:
    # Behind a zarr store (s3:// in use) an acknowledged put is durable already: the
    # writer must not serialise its commits (or sync) for durable=True there.
    from zarr.storage import LocalStore

    from spikestore.backends._remote import ZarrStoreKeys

    assert ZarrBackend(tmp_path / "a", writable=True, durable=True).durable
    assert not ZarrBackend(tmp_path / "b", writable=True).durable
    remote_like = ZarrStoreKeys(LocalStore(tmp_path / "c"), str(tmp_path / "c"))
    assert not ZarrBackend(tmp_path / "c", writable=True, durable=True, keys=remote_like).durable


def test_a_final_document_is_overwritten_in_place_only_within_one_page(tmp_path):
    from spikestore.backends._keys import LocalKeys

    keys = LocalKeys(tmp_path)
    keys.put("zarr.json", b'{"a": "' + b"x" * 100 + b'"}')
    assert keys.overwrite_in_page("zarr.json", b'{"a": 1}')
    text = (tmp_path / "zarr.json").read_bytes()
    assert len(text) == 109 and json.loads(text) == {"a": 1}  # padded with spaces, never cut short
    assert not keys.overwrite_in_page("zarr.json", b" " * 4097)  # past one page: not safe in place
    assert not keys.overwrite_in_page("missing.json", b"{}")  # nothing to overwrite
    (tmp_path / "elsewhere.json").write_bytes(b"{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "elsewhere.json")
    assert not keys.overwrite_in_page("link.json", b"[]")  # a link is never written through
    assert (tmp_path / "elsewhere.json").read_bytes() == b"{}"
