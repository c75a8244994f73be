"""Every chunk is bound to its place, so a chunk in the wrong place is damage, never wrong records.

The stream document holds one tag per chunk, over the array's identity (its
name and layout), the chunk's number, its rows and its stored bytes, and a
tail tag over the committed rows of a partly filled last chunk
(docs/format.md §6). Readers check them (§7): two chunks swapped, a stale
copy of a chunk, a chunk copied from another array, or a document edited to
a larger ``count`` or another dtype or shape of the same size raise
:class:`DamagedStoreError` naming the store, the stream, the array and the
chunk. The chunks themselves are exactly what their codecs produce
(tests/test_strict_readers.py reads them with tensorstore). Stores written
with identity frames (identity 1) keep reading and appending.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import spikestore
from spikestore import verify
from spikestore.errors import DamagedStoreError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stores"
BITS, RAW = "output/x", "v/x"


def _write(path: Path, n: int = 11) -> dict[str, list[np.ndarray]]:
    """A bits stream (9 records a chunk) and a raw float32 stream of shape [2, 3] (2 a chunk)."""
    rng = np.random.default_rng(0)
    written: dict[str, list[np.ndarray]] = {BITS: [], RAW: []}
    with spikestore.Store(path, chunk_bytes=48) as store:
        for i in range(n):
            spikes = (rng.random(40) < 0.1 * (1 + i % 4)).astype(np.float32)
            volts = rng.standard_normal((2, 3)).astype(np.float32)
            for key, value in ((BITS, spikes), (RAW, volts)):
                store.append(key, value, encoding="bits" if key == BITS else "raw")
                written[key].append(value)
    return written


def _chunk_file(path: Path, node: str, chunk: int) -> Path:
    meta = json.loads((path / node / "zarr.json").read_text())
    return path / node / (f"c.{chunk}" + ".0" * (len(meta["shape"]) - 1))


def _get_chunk(path: Path, node: str, chunk: int) -> tuple[int, bytes]:
    if path.suffix == ".zarr":
        return 0, _chunk_file(path, node, chunk).read_bytes()
    with h5py.File(path, "r", locking=False, swmr=True) as f:  # (also while a writer has it open)
        d = f[node]
        mask, data = d.id.read_direct_chunk((chunk * d.chunks[0], *(0,) * (d.ndim - 1)))
        return mask, bytes(data)


def _put_chunk(path: Path, node: str, chunk: int, mask_data: tuple[int, bytes]) -> None:
    mask, data = mask_data
    if path.suffix == ".zarr":
        _chunk_file(path, node, chunk).write_bytes(data)
        return
    with h5py.File(path, "r+") as f:
        d = f[node]
        d.id.write_direct_chunk((chunk * d.chunks[0], *(0,) * (d.ndim - 1)), data, filter_mask=mask)


def _swap(path: Path, node: str, a: int, b: int, node_b: str | None = None) -> None:
    node_b = node_b or node
    first, second = _get_chunk(path, node, a), _get_chunk(path, node_b, b)
    _put_chunk(path, node, a, second)
    _put_chunk(path, node_b, b, first)


def _edit_doc(path: Path, node: str, edit: Callable[[dict[str, Any]], None]) -> None:
    if path.suffix == ".zarr":
        meta = json.loads((path / node / "zarr.json").read_text())
        edit(meta["attributes"]["spikestore"])
        (path / node / "zarr.json").write_text(json.dumps(meta))
        return
    with h5py.File(path, "r+") as f:
        doc = json.loads(f[node].attrs["spikestore"])
        edit(doc)
        f[node].attrs["spikestore"] = np.bytes_(json.dumps(doc))


def _all(path: Path, key: str) -> np.ndarray:
    with spikestore.open(path) as run:
        return np.stack([run[key][i] for i in range(len(run[key]))])


@pytest.mark.parametrize("key", [BITS, RAW])
def test_two_swapped_chunks_are_damage(store_path, key):
    written = _write(store_path)
    np.testing.assert_array_equal(_all(store_path, key), np.stack(written[key]))
    _swap(store_path, f"{key}/seg000000", 0, 1)
    with spikestore.open(store_path) as run, pytest.raises(DamagedStoreError) as info:
        run[key][0]
    msg = str(info.value)
    assert str(store_path) in msg and repr(key) in msg and f"{key}/seg000000" in msg
    assert "chunk 0" in msg and "it is chunk 1 of this array" in msg
    problems = verify(store_path)
    assert len(problems) == 2 and all("it is chunk" in p for p in problems), problems


def test_swapped_index_chunks_are_damage(store_path):
    with spikestore.Store(store_path) as store:
        for i in range(4100):  # two index chunks of 4096 records
            store.set_step(i)
            store.append("loss/x", np.float32(i))
    _swap(store_path, "loss/x/step", 0, 1)
    with spikestore.open(store_path) as run, pytest.raises(DamagedStoreError, match="it is chunk 1 of this array"):
        _ = run["loss/x"].steps


def test_a_chunk_of_another_array_is_damage(store_path):
    # step (int64) and time (float64) chunks have the same size: swapped, each decodes to garbage.
    _write(store_path)
    _swap(store_path, f"{BITS}/step", 0, 0, node_b=f"{BITS}/time")
    with spikestore.open(store_path) as run, pytest.raises(DamagedStoreError, match="another array"):
        _ = run[BITS].steps


def test_a_chunk_copied_from_another_stream_is_damage(store_path):
    rng = np.random.default_rng(1)
    with spikestore.Store(store_path, chunk_bytes=15) as store:
        for _ in range(6):
            store.append("output/a", (rng.random(40) < 0.2).astype(np.float32))
            store.append("output/b", (rng.random(40) < 0.2).astype(np.float32))
    _put_chunk(store_path, "output/b/seg000000", 1, _get_chunk(store_path, "output/a/seg000000", 1))
    with spikestore.open(store_path) as run:
        run["output/b"][0]  # chunk 0 is its own
        with pytest.raises(DamagedStoreError, match="another array") as info:
            run["output/b"][3]
    assert "'output/b'" in str(info.value) and "chunk 1 of output/b/seg000000" in str(info.value)
    assert any("chunk 1 of output/b/seg000000" in p for p in verify(store_path))


@pytest.mark.parametrize("key", [BITS, RAW])
def test_a_count_edited_upwards_is_damage(store_path, key):
    _write(store_path)  # the last chunk of both holds fewer rows than it could

    def grow(doc: dict[str, Any]) -> None:
        doc["count"] += 1
        doc["segments"][-1]["count"] += 1

    _edit_doc(store_path, key, grow)
    with spikestore.open(store_path) as run:
        s = run[key]
        assert len(s) == 12
        s[0]  # an earlier chunk is intact
        with pytest.raises(DamagedStoreError, match=r"held .* rows .* commits .* rows") as info:
            s[11]  # the last chunk held one row less than the document now commits
        assert f"{key}/seg000000" in str(info.value)
        with pytest.raises(DamagedStoreError, match=r"held .* rows"):
            _ = s.steps  # so did the last index chunk


@pytest.mark.parametrize("edit", ["dtype", "shape"])
def test_a_layout_edited_to_the_same_size_is_damage(store_path, edit):
    _write(store_path)

    def change(doc: dict[str, Any]) -> None:
        seg = doc["segments"][0]
        if edit == "dtype":  # float32 read as int32: same bytes, other numbers
            seg["dtype"] = seg["stored_dtype"] = "int32"
        else:  # [2, 3] read as [3, 2]
            seg["shape"] = seg["stored_shape"] = [3, 2]

    _edit_doc(store_path, RAW, change)
    with spikestore.open(store_path) as run, pytest.raises(DamagedStoreError, match="another array"):
        run[RAW][0]


def test_an_identity_removed_from_the_document_is_damage(store_path):
    _write(store_path)

    def drop(doc: dict[str, Any]) -> None:
        del doc["segments"][0]["identity"]

    _edit_doc(store_path, BITS, drop)
    with spikestore.open(store_path) as run, pytest.raises(DamagedStoreError, match="has no identity"):
        run[BITS][0]


def _set_doc(path: Path, node: str, doc: dict[str, Any]) -> None:
    def put(d: dict[str, Any]) -> None:
        d.clear()
        d.update(doc)

    _edit_doc(path, node, put)


def test_a_last_chunk_rewritten_after_its_commit_still_reads(store_path):
    # A writer killed after rewriting the partly filled last chunk with more rows, before its next
    # commit, leaves a document whose tag names the chunk as it was: its committed rows still read.
    rng = np.random.default_rng(1)
    values = [(rng.random(40) < 0.3).astype(np.float32) for _ in range(7)]
    with spikestore.Store(store_path, chunk_bytes=48) as store:  # 9 records a chunk
        for v in values[:4]:
            store.append(BITS, v)
        store.flush()
        with spikestore.open(store_path) as run:  # (HDF5: read through the writer's SWMR view)
            committed = json.loads(json.dumps(run[BITS].doc))
        for v in values[4:]:
            store.append(BITS, v)
    _set_doc(store_path, BITS, committed)  # the chunk holds 7 rows, the document commits 4
    with spikestore.open(store_path) as run:
        s = run[BITS]
        assert len(s) == 4
        np.testing.assert_array_equal(np.stack([s[i] for i in range(4)]), np.stack(values[:4]))
        assert s[3:4].shape == (1, 40)  # the partial-row path checks the same way
    assert verify(store_path) == []


def test_a_stale_copy_of_a_chunk_is_damage(store_path):
    # A chunk restored from an older copy (fewer rows than the document commits) is caught.
    rng = np.random.default_rng(2)
    with spikestore.Store(store_path, chunk_bytes=48) as store:
        for i in range(7):
            store.append(BITS, (rng.random(40) < 0.3).astype(np.float32))
            if i == 3:
                store.flush()
                old = _get_chunk(store_path, f"{BITS}/seg000000", 0)
    _put_chunk(store_path, f"{BITS}/seg000000", 0, old)
    with spikestore.open(store_path) as run, pytest.raises(DamagedStoreError, match="stale copy"):
        run[BITS][5]
    problems = verify(store_path)
    assert len(problems) == 1 and "chunk 0 of output/x/seg000000" in problems[0]


@pytest.mark.parametrize("name", ["v2-frames.zarr", "v2-frames.h5"])
def test_swapped_chunks_of_a_store_with_frames_are_damage(tmp_path, name):
    path = tmp_path / name
    (shutil.copytree if name.endswith(".zarr") else shutil.copy)(FIXTURES / name, path)
    assert verify(path) == []
    _swap(path, "v_seq/fc/seg000000", 0, 1)
    with spikestore.open(path) as run, pytest.raises(DamagedStoreError, match="written as chunk 1"):
        run["v_seq/fc"][0]
    assert any("chunk 0 of v_seq/fc/seg000000" in p for p in verify(path))


def test_documents_mark_what_carries_an_identity(store_path):
    _write(store_path)
    with spikestore.open(store_path) as run:
        doc = run[BITS].doc
    assert doc["index"]["identity"] == 2 and set(doc["index"]["tags"]) == {"step", "call", "time"}
    assert all(seg["identity"] == 2 and seg["tags"] for seg in doc["segments"])


def test_an_intact_store_with_identities_verifies(store_path):
    _write(store_path)
    assert verify(store_path) == []


def _plain_values(path: Path, node: str) -> np.ndarray:
    if path.suffix == ".zarr":
        import zarr

        return zarr.open_array(path / node, mode="r")[:]

    with h5py.File(path, "r") as f:
        return f[node][:]


def test_plain_zarr_and_h5py_decode_chunks_with_identities(store_path):
    # Densities that make the spike codec pick each mode (bitmap, gaps8, pcodec, zeros),
    # with rows of 100 bits (padded: the row flag), raw blosc and zstd segments, and index arrays.
    rng = np.random.default_rng(3)
    with spikestore.Store(store_path, chunk_bytes=2000) as store:
        for p in (0.3, 0.05, 0.004, 0.0):
            for _ in range(9):  # one chunk each (9 records of 16 x 13 bytes)
                store.append("output/l", (rng.random((16, 100)) < p).astype(np.float32))
        for _ in range(5):
            store.append("v/big", rng.standard_normal(2048).astype(np.float32))  # blosc
            store.append("v/small", rng.standard_normal(3).astype(np.float32))  # zstd
    with spikestore.open(store_path) as run:
        for key in ("output/l", "v/big", "v/small"):
            s = run[key]
            seg = s.segments[0]
            plain = _plain_values(store_path, f"{s.node}/{seg.doc['array']}")
            np.testing.assert_array_equal(seg.decode_rows(plain), np.stack([s[i] for i in range(len(s))]))
            np.testing.assert_array_equal(_plain_values(store_path, f"{s.node}/step"), s.steps)
            np.testing.assert_array_equal(_plain_values(store_path, f"{s.node}/time"), s.times)
    if store_path.suffix == ".zarr":  # every mode of the spike codec was written, without a frame
        from spikestore.codecs._identity import split_frame
        from spikestore.codecs._spikes import _HEADER

        modes = set()
        for f in (store_path / "output/l/seg000000").glob("c.*"):
            body, frame = split_frame(f.read_bytes()[:-4])
            assert frame is None
            modes.add(_HEADER.unpack_from(body)[1] & 0x7F)
        assert modes == {0, 1, 2, 3}


@pytest.mark.parametrize("name", ["v1.zarr", "v1.h5"])
def test_appending_to_a_store_written_before_identities(tmp_path, name):
    path = tmp_path / name
    (shutil.copytree if name.endswith(".zarr") else shutil.copy)(FIXTURES / name, path)
    with spikestore.open(path) as run:
        key = "grad_input/"  # float64 scalars
        before = [run[key][i] for i in range(len(run[key]))]
        assert "identity" not in run[key].doc["index"]
        assert run.doc["format_version"] == 1
    with spikestore.Store(path, mode="a") as store:
        for i in range(5):
            store.append(key, before[-1] + i + 1)
            store.append("new/one", np.float32(i))
    with spikestore.open(path) as run:
        assert run.doc["format_version"] == 2  # new chunks carry identities a version-1 reader does not know
        s = run[key]
        assert "identity" not in s.doc["index"]  # its index is written without an identity
        assert s.doc["segments"][-1]["identity"] == 2 and "identity" not in s.doc["segments"][0]
        got = [s[i] for i in range(len(s))]
        np.testing.assert_array_equal(np.stack(got[:len(before)]), np.stack(before))
        np.testing.assert_array_equal(np.stack(got[len(before):]), np.stack([before[-1] + i + 1 for i in range(5)]))
        assert [run["new/one"][i] for i in range(5)] == [0, 1, 2, 3, 4]
        assert run["new/one"].doc["index"]["identity"] == 2
    assert verify(path) == []


def test_the_documented_identity_example():
    # docs/format.md §6 spells out one digest and one frame: they are what the code computes.
    from spikestore.codecs._identity import ChunkIdentity

    seg = {"array": "seg000000", "start": 0, "count": 3, "shape": [8, 4, 10], "dtype": "float32",
           "encoding": "bits", "stored_shape": [8, 4, 2], "stored_dtype": "uint8", "chunk_records": 4096,
           "codec": {"id": "spikestore.spikes", "level": 1, "row_bits": 10}, "precision": None, "identity": 1}
    identity = ChunkIdentity.for_segment("output/fc1", seg)
    text = (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()
    data = ('{"array":"seg000000","chunk_records":4096,"codec":{"id":"spikestore.spikes","level":1,"row_bits":10},'
            '"dtype":"float32","encoding":"bits","precision":null,"shape":[8,4,10],"stored_dtype":"uint8",'
            '"stored_shape":[8,4,2],"stream":"output/fc1"}')
    assert data in text
    assert hashlib.blake2b(data.encode(), digest_size=16).digest() == identity.digest
    assert f"its digest is `{identity.digest.hex()}`" in text
    frame = "5e2a4d18 21000000 73706b49 01 03000000 0000000000000000 " + identity.digest.hex()
    assert identity.frame(0, 3).hex() == frame.replace(" ", "") and f"`{frame}`" in text


def test_tags_follow_the_documented_rule(store_path):
    # docs/format.md §6 "Identity 2: tags", recomputed here from the page with hashlib, struct, base64 and
    # google_crc32c: every tag of every array, and the tail tags of partly filled last chunks.
    import base64
    import struct

    import google_crc32c

    if store_path.suffix != ".zarr":
        pytest.skip("the chunk files are read directly")
    _write(store_path)

    def digest(key: str, fields: dict[str, Any]) -> bytes:
        data = json.dumps({"stream": key, **fields}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.blake2b(data.encode("ascii"), digest_size=16).digest()

    def crc(data: bytes) -> int:
        return int(google_crc32c.value(data))

    with spikestore.open(store_path) as run:
        for key in (BITS, RAW):
            doc = run[key].doc
            arrays = [(seg["array"], seg, seg["count"], {f: seg[f] for f in (
                "array", "shape", "dtype", "encoding", "stored_shape", "stored_dtype", "chunk_records", "codec",
                "precision")}) for seg in doc["segments"]]
            index = doc["index"]
            arrays += [(name, {"tags": index["tags"][name], "tail": index.get("tail", {}).get(name)}, doc["count"],
                        {"array": name, "dtype": dt, "chunk_records": index["chunk_records"],
                         "codec": index["codecs"][name]}) for name, dt in
                       (("step", "int64"), ("call", "int32"), ("time", "float64"))]
            for name, entry, count, fields in arrays:
                d, per = digest(key, fields), fields["chunk_records"]
                tags = base64.b64decode(entry["tags"])
                n = -(-count // per)
                assert len(tags) == 4 * n
                for i in range(n):
                    rows = min(per, count - i * per)
                    checksum = _chunk_file(store_path, f"{key}/{name}", i).read_bytes()[-4:]
                    tag = crc(b"spkT" + d + struct.pack("<QI", i, rows) + checksum)
                    assert tag == struct.unpack_from("<I", tags, 4 * i)[0], (key, name, i)
                last_rows = count - (n - 1) * per
                assert (entry.get("tail") is not None) == (last_rows < per)
                if last_rows < per:
                    node = f"{key}/{name}"
                    stored = _plain_values(store_path, node)[(n - 1) * per:count]
                    tail = crc(b"spkR" + d + struct.pack("<QI", n - 1, last_rows) + stored.astype(
                        stored.dtype.newbyteorder("<")).tobytes())
                    assert tail == entry["tail"], (key, name)


@pytest.mark.parametrize(("edit", "error", "match"), [
    ("newer identity", "format", "identity version 3"),
    ("a tag changed", "damaged", "not those its document's tag names"),
    ("a tag dropped", "damaged", "holds 1 chunk tags for 2 committed chunks"),
    ("tags not base64", "damaged", "tags"),
])
def test_an_edited_identity_is_refused(store_path, edit, error, match):
    import base64

    from spikestore.errors import FormatError

    _write(store_path)  # BITS: 11 records, 9 a chunk: two chunks

    def change(doc: dict[str, Any]) -> None:
        seg = doc["segments"][0]
        tags = bytearray(base64.b64decode(seg["tags"]))
        if edit == "newer identity":
            seg["identity"] = 3
        elif edit == "a tag changed":
            tags[0] ^= 1
            seg["tags"] = base64.b64encode(bytes(tags)).decode()
        elif edit == "a tag dropped":
            seg["tags"] = base64.b64encode(bytes(tags[:4])).decode()
        else:
            seg["tags"] = "not base64!"

    _edit_doc(store_path, BITS, change)
    with spikestore.open(store_path) as run, pytest.raises(FormatError if error == "format" else DamagedStoreError,
                                                            match=match) as info:
        run[BITS][0]
    assert not (error == "format" and isinstance(info.value, DamagedStoreError))
