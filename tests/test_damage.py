"""Damaged metadata is always visible on the read side: every damage is visible.

A document or array metadata that is missing, unreadable, inconsistent or
absurd raises :class:`DamagedStoreError` naming the file, never a plain
exception, a ``MemoryError`` or silently wrong records. A stream listed in
the root whose group a live writer has not created yet is the one valid
"missing" state: 0 records; once its writer is done, a listed stream without
its group is damage.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import SMALL_STORE_STREAM as STREAM
from helpers import SMALL_STORE_ZARR_JSON as ZARR_JSON

import spikestore
from spikestore import verify
from spikestore.errors import DamagedStoreError, FormatError


def read_all(path: Path, key: str = STREAM) -> tuple:
    """Everything a reader can ask of a stream."""
    with spikestore.open(path) as run:
        s = run[key]
        return len(s), s[:], s.steps, s.calls, s.times


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _edit_doc(store: Path, node: str, edit) -> None:
    if store.suffix == ".h5":
        with h5py.File(store, "r+") as f:
            g = f[node] if node else f
            doc = json.loads(g.attrs["spikestore"])
            edit(doc)
            g.attrs["spikestore"] = json.dumps(doc)
        return
    _edit_json(store / node / "zarr.json", lambda meta: edit(meta["attributes"]["spikestore"]))


# -- missing metadata --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ZARR_JSON))
def test_a_deleted_zarr_json_is_damage(zstore, kind):
    (zstore / ZARR_JSON[kind]).unlink()
    with pytest.raises(DamagedStoreError) as err:
        read_all(zstore)
    assert ZARR_JSON[kind] in str(err.value) and "spikestore verify" in str(err.value)


def _live_writer(doc: dict) -> None:
    """Make a root document say this process is its writer, still open (a live writer)."""
    doc["writer"].update(status="open", pid=os.getpid(), host=socket.gethostname(), closed=None)


def _dead_pid() -> int:
    """The id of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _gone_writer(doc: dict) -> None:
    """Make a root document say its writer is open, on this host, in a process that no longer runs."""
    doc["writer"].update(status="open", pid=_dead_pid(), host=socket.gethostname(), closed=None)


def test_a_stream_a_live_writer_listed_but_has_not_created_has_no_records(zstore, hstore):
    for store in (zstore, hstore):
        _edit_doc(store, "", lambda d: (d["streams"].append("x/new"), _live_writer(d)))
        n, values, steps, calls, times = read_all(store, "x/new")
        assert n == 0 and len(values) == 0
        assert steps.dtype == np.int64 and calls.dtype == np.int32 and times.dtype == np.float64
        assert len(steps) == len(calls) == len(times) == 0
        with spikestore.open(store) as run:
            assert run["x/new"].to_xarray().shape[0] == 0
            assert [r["records"] for r in run.summary() if r["stream"] == "x/new"] == [0]
        assert verify(store) == []


@pytest.mark.parametrize("writer", ["closed", "failed", "gone"])
@pytest.mark.parametrize("deleted", ["stream", "quantity"])
def test_a_deleted_stream_group_of_a_finished_writer_is_damage(zstore, hstore, writer, deleted):
    # The writer creates a stream's group before it lists the stream: once it is done, a listed
    # stream without its group lost its records (never 0 records, never "intact").
    node = STREAM if deleted == "stream" else STREAM.split("/")[0]
    for store in (zstore, hstore):
        if store.suffix == ".h5":
            with h5py.File(store, "r+") as f:
                del f[node]
        else:
            shutil.rmtree(store / node)
        if writer == "failed":
            _edit_doc(store, "", lambda d: d["writer"].update(status="failed", error="OSError: disk full"))
        elif writer == "gone":
            _edit_doc(store, "", _gone_writer)
        with pytest.raises(DamagedStoreError, match=f"{STREAM}.*records are lost"):
            read_all(store)
        problems = verify(store)
        assert any(STREAM in line and "records are lost" in line for line in problems), problems


def test_a_stream_group_left_empty_by_a_live_writer_has_no_records(zstore, hstore):
    # A group without its document yet, or holding a temporary file, while its writer lives.
    _edit_doc(zstore, "", lambda d: (d["streams"].append("x/new"), _live_writer(d)))
    (zstore / "x/new").mkdir(parents=True)
    (zstore / "x/new/zarr.json.3f2a.partial").write_bytes(b'{"zarr_')
    _edit_doc(hstore, "", lambda d: (d["streams"].append("x/new"), _live_writer(d)))
    with h5py.File(hstore, "r+") as f:
        f.create_group("x/new")
    for store in (zstore, hstore):
        assert read_all(store, "x/new")[0] == 0
        assert verify(store) == []


def test_an_empty_stream_group_of_a_closed_writer_is_damage(zstore, hstore):
    _edit_doc(zstore, "", lambda d: d["streams"].append("x/new"))
    (zstore / "x/new").mkdir(parents=True)
    _edit_doc(hstore, "", lambda d: d["streams"].append("x/new"))
    with h5py.File(hstore, "r+") as f:
        f.create_group("x/new")
    for store in (zstore, hstore):
        with pytest.raises(DamagedStoreError, match="x/new"):
            read_all(store, "x/new")
        assert any("x/new" in line for line in verify(store))


def test_a_stream_group_with_arrays_but_no_document_is_damage(hstore):
    with h5py.File(hstore, "r+") as f:
        del f[STREAM].attrs["spikestore"]
    with pytest.raises(DamagedStoreError, match="output/fc"):
        read_all(hstore)
    assert verify(hstore)


# -- unreadable documents ------------------------------------------------------------------------

BAD_BYTES = {
    "torn": lambda raw: raw[: len(raw) // 2],
    "not-utf8": lambda raw: raw.replace(b'"', b'\xff', 1),
    "not-an-object": lambda raw: b"[1, 2]",
    "attributes-not-an-object": lambda raw: json.dumps({**json.loads(raw), "attributes": [1]}).encode(),
    "document-not-an-object": lambda raw: json.dumps(
        {**json.loads(raw), "attributes": {"spikestore": "x"}}).encode(),
}


@pytest.mark.parametrize("how", list(BAD_BYTES))
@pytest.mark.parametrize("kind", ["root", "stream", "segment", "step"])
def test_an_unreadable_zarr_json_is_damage_naming_the_file(zstore, kind, how):
    if kind in ("segment", "step") and how in ("document-not-an-object", "attributes-not-an-object"):
        pytest.skip("array metadata holds no document, and zarr takes any attributes")
    path = zstore / ZARR_JSON[kind]
    path.write_bytes(BAD_BYTES[how](path.read_bytes()))
    with pytest.raises(DamagedStoreError) as err:
        read_all(zstore)
    assert str(path) in str(err.value)
    assert verify(zstore)


@pytest.mark.parametrize("text", [b'{"count": ', b"[]", b'"x"', b'{"a": "\xff"}'])
@pytest.mark.parametrize("node", ["", STREAM])
def test_an_unreadable_hdf5_document_is_damage_naming_the_object(hstore, node, text):
    with h5py.File(hstore, "r+") as f:
        (f[node] if node else f).attrs["spikestore"] = np.bytes_(text)
    with pytest.raises(DamagedStoreError) as err:
        read_all(hstore)
    assert str(hstore) in str(err.value) and f"/{node}" in str(err.value)
    assert verify(hstore)


# -- documents that contradict themselves --------------------------------------------------------


def _seg(d: dict) -> dict:
    return d["segments"][0]


EDITS = {
    "count-too-high": lambda d: d.update(count=d["count"] + 1),
    "count-too-low": lambda d: d.update(count=d["count"] - 1),
    "segment-count": lambda d: _seg(d).update(count=_seg(d)["count"] + 1),
    "first-start": lambda d: _seg(d).update(start=1),
    "gap": lambda d: d["segments"].append(dict(_seg(d), array="seg000001", start=_seg(d)["count"] + 1,
                                                count=0)),
    "duplicate-array": lambda d: d["segments"].append(dict(_seg(d), start=_seg(d)["count"], count=0)),
    "shape": lambda d: _seg(d).update(shape=[4, 17]),  # [4, 11] packs to the same bytes: undetectable
    "stored-shape": lambda d: _seg(d).update(stored_shape=[4, 3]),
    "stored-dtype": lambda d: _seg(d).update(stored_dtype="int8"),
    "dtype": lambda d: _seg(d).update(dtype="float31"),
    "bits-of-complex": lambda d: _seg(d).update(dtype="complex64"),
    "encoding": lambda d: _seg(d).update(encoding="raw"),
    "codec-id": lambda d: _seg(d).update(codec={"id": "lzma"}),
    "codec-level": lambda d: _seg(d)["codec"].pop("level"),
    "row-bits": lambda d: _seg(d)["codec"].update(row_bits=9),
    "index-codec": lambda d: d["index"]["codecs"].pop("call"),
    "index-chunk-records": lambda d: d["index"].update(chunk_records="4096"),
    "layer": lambda d: d.update(layer="fc2"),
    "quantity": lambda d: d.update(quantity="spikes"),
    "precision": lambda d: _seg(d).update(precision="bf16"),
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_an_inconsistent_stream_document_is_damage(zstore, hstore, suffix, edit):
    store = zstore if suffix == ".zarr" else hstore
    _edit_doc(store, STREAM, EDITS[edit])
    with pytest.raises(DamagedStoreError, match="output/fc"):
        read_all(store)
    assert verify(store)


def test_a_malformed_selection_only_makes_the_layout_unknown(zstore):
    # The selection is informative (format.md §3): Store.set_stream_info takes any object.
    _edit_doc(zstore, STREAM, lambda d: d.update(selection={"every": "x", "step_mode": "m", "batch_axis": 1,
                                                            "batch": {"slice": "x"}, "neurons": [1.5]}))
    with spikestore.open(zstore) as run:
        s = run[STREAM]
        assert s.layout.every == 1 and s.layout.batch is None and s.layout.neurons is None
        assert len(s[:]) == 12


ROOT_EDITS = {
    "duplicate-stream": lambda d: d["streams"].append(STREAM),
    "no-slash": lambda d: d["streams"].append("output"),
    "reserved-quantity": lambda d: d["streams"].append("__x/y"),
    "streams-not-a-list": lambda d: d.update(streams="output/fc"),
    "writer": lambda d: d.update(writer=None),
}


@pytest.mark.parametrize("edit", list(ROOT_EDITS))
def test_an_inconsistent_root_document_is_damage(zstore, hstore, edit):
    for store in (zstore, hstore):
        _edit_doc(store, "", ROOT_EDITS[edit])
        with pytest.raises(DamagedStoreError):
            spikestore.open(store)
        assert verify(store)
        with pytest.raises(DamagedStoreError):
            spikestore.Store(store, mode="a").close()


def test_a_newer_format_is_refused_not_called_damaged(zstore):
    _edit_doc(zstore, "", lambda d: d.update(format_version=99))
    with pytest.raises(FormatError, match="newer") as err:
        spikestore.open(zstore)
    assert not isinstance(err.value, DamagedStoreError)


def test_resuming_a_damaged_stream_is_refused(zstore):
    _edit_doc(zstore, STREAM, EDITS["count-too-high"])
    with pytest.raises(DamagedStoreError, match="output/fc"):
        spikestore.Store(zstore, mode="a").close()


# -- absurd sizes: refused before anything is allocated ---------------------------------------------

ABSURD = {
    # A record of 10^12 bytes, consistent everywhere in the document.
    "shape": lambda d: _seg(d).update(shape=[10**6, 8 * 10**6], stored_shape=[10**6, 10**6]),
    "chunk-records": lambda d: _seg(d).update(chunk_records=10**12),
    "index-chunk-records": lambda d: d["index"].update(chunk_records=10**12),
    "many-dims": lambda d: _seg(d).update(shape=[1] * 40 + [10], stored_shape=[1] * 40 + [2]),
    "huge-dim-of-empty-record": lambda d: _seg(d).update(shape=[0, 2**70], stored_shape=[0, 2**67]),
}

MEMORY_BOUND = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
    import spikestore
    from spikestore import verify
    from spikestore.errors import DamagedStoreError
    try:
        with spikestore.open(sys.argv[1]) as run:
            s = run["output/fc"]
            s[0], s[-1], s.steps, s[:]
    except DamagedStoreError as exc:
        print("damaged:", exc)
    else:
        print("read")
    print("verify:", len(verify(sys.argv[1])))
""")


@pytest.mark.parametrize("edit", [*ABSURD, "count"])
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_absurd_sizes_are_damage_within_bounded_memory(zstore, hstore, suffix, edit):
    store = zstore if suffix == ".zarr" else hstore
    if edit == "count":  # consistent, but no array holds that many records
        def absurd(d):
            d["count"] = _seg(d)["count"] = 10**15
    else:
        absurd = ABSURD[edit]
    _edit_doc(store, STREAM, absurd)
    r = subprocess.run([sys.executable, "-c", MEMORY_BOUND, str(store)], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.startswith("damaged:"), r.stdout + r.stderr
    assert "verify: 0" not in r.stdout


# -- integers written as floats -----------------------------------------------------------------

FLOAT_INTEGERS = {
    "count": lambda d: d.update(count=float(d["count"])),
    "segment-count": lambda d: _seg(d).update(count=float(_seg(d)["count"])),
    "chunk_records": lambda d: _seg(d).update(chunk_records=float(_seg(d)["chunk_records"])),
    "index-chunk_records": lambda d: d["index"].update(chunk_records=float(d["index"]["chunk_records"])),
    "start": lambda d: _seg(d).update(start=float(_seg(d)["start"])),
    "shape": lambda d: _seg(d).update(shape=[float(x) for x in _seg(d)["shape"]]),
}


@pytest.mark.parametrize("edit", list(FLOAT_INTEGERS))
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_an_integer_written_as_a_float_is_damage(zstore, hstore, suffix, edit):
    # 40.0 where the format says integer: refused by validation, named, never a raw TypeError later.
    store = zstore if suffix == ".zarr" else hstore
    _edit_doc(store, STREAM, FLOAT_INTEGERS[edit])
    with pytest.raises(DamagedStoreError, match=r"invalid at .*is not of type 'integer'"):
        read_all(store)
    problems = verify(store)
    assert any(line.startswith(f"{STREAM}:") and "'integer'" in line for line in problems), problems


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_root_integer_written_as_a_float_is_damage(zstore, hstore, suffix):
    store = zstore if suffix == ".zarr" else hstore
    _edit_doc(store, "", lambda d: d["writer"].update(dropped=0.0))
    with pytest.raises(DamagedStoreError, match="writer/dropped"):
        spikestore.open(store)
    assert any("writer/dropped" in line for line in verify(store))
