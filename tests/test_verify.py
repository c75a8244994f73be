"""``spikestore verify`` sees every damage, and stays fast on damaged files.

Each case damages a real store written by :class:`spikestore.Store` and
checks that verify lists a problem (the CLI then exits 1), or, for damage
that changes nothing a reader uses, that the records still read exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from helpers import SMALL_STORE_STREAM as STREAM
from helpers import SMALL_STORE_ZARR_JSON as ZARR_JSON
from helpers import write_small_store

import spikestore
from spikestore import verify
from spikestore.cli import main
from spikestore.errors import SpikestoreError


def contents(path: Path) -> dict[str, tuple[np.ndarray, ...]]:
    """Every record and index entry of every stream."""
    with spikestore.open(path) as run:
        return {k: (run[k][:], run[k].steps, run[k].calls, run[k].times) for k in run.streams}


def same_contents(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x.dtype == y.dtype and np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k], strict=True))


def cli_verify(path: Path) -> int:
    return CliRunner().invoke(main, ["verify", str(path)]).exit_code


def test_an_intact_store_verifies_with_progress(zstore):
    calls = []
    assert verify(zstore, progress=lambda done, total: calls.append((done, total))) == []
    assert calls and calls[-1][0] == calls[-1][1] > 0
    assert cli_verify(zstore) == 0


@pytest.mark.parametrize("kind", list(ZARR_JSON))
def test_a_deleted_zarr_json_is_reported(zstore, kind):
    (zstore / ZARR_JSON[kind]).unlink()
    problems = verify(zstore)
    assert problems and any(ZARR_JSON[kind].rsplit("/", 1)[0] in p or kind == "root" for p in problems)
    assert cli_verify(zstore) == 1


def _mangles() -> list[tuple[str, str, str]]:
    return [(array, key, how) for array in ("segment", "step")
            for key in ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs",
                        "attributes", "zarr_format", "node_type", "storage_transformers")
            for how in ("delete", "rename", "wrong-type")]


@pytest.mark.parametrize(("array", "key", "how"), _mangles())
def test_mangled_array_metadata_is_reported_when_zarr_refuses_it(pristine, zstore, array, key, how):
    path = zstore / ZARR_JSON[array]
    meta = json.loads(path.read_text())
    value = meta.pop(key)
    if how == "rename":
        meta[key + "_"] = value
    elif how == "wrong-type":
        meta[key] = 7 if isinstance(value, list) else []
    path.write_text(json.dumps(meta))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.open_array(path.parent, mode="r")[:]
        zarr_opens = True
    except Exception:  # noqa: BLE001 - whatever zarr raises, the question is only whether it opens
        zarr_opens = False
    problems = verify(zstore)
    if not zarr_opens:
        assert problems, "plain zarr refuses this array, verify must too"
        assert any(str(path.parent.relative_to(zstore)) in p for p in problems), problems
    if not problems:
        assert same_contents(contents(zstore), contents(pristine / "s.zarr"))
    else:
        assert cli_verify(zstore) == 1


ARRAY_EDITS = {
    "shorter-than-count": ("segment", lambda m: m.update(shape=[3, *m["shape"][1:]])),
    "record-shape": ("segment", lambda m: m.update(shape=[m["shape"][0], 4, 3])),
    "chunk-shape": ("segment", lambda m: m["chunk_grid"]["configuration"].update(
        chunk_shape=[m["chunk_grid"]["configuration"]["chunk_shape"][0] + 1, 4, 2])),
    "data-type": ("segment", lambda m: m.update(data_type="int8")),
    "no-checksum": ("segment", lambda m: m.update(codecs=m["codecs"][:-1])),
    "other-codec": ("step", lambda m: m.update(codecs=[m["codecs"][0], {"name": "zstd", "configuration": {
        "level": 3, "checksum": False}}, m["codecs"][-1]])),
    "index-dtype": ("step", lambda m: m.update(data_type="int32")),
    "index-shorter": ("time", lambda m: m.update(shape=[1])),
    "index-record-shape": ("call", lambda m: m.update(shape=[m["shape"][0], 1],
                                                      chunk_grid={"name": "regular", "configuration": {
                                                          "chunk_shape": [4096, 1]}})),
}


@pytest.mark.parametrize("edit", list(ARRAY_EDITS))
def test_array_metadata_that_contradicts_the_document_is_reported(zstore, edit):
    array, change = ARRAY_EDITS[edit]
    path = zstore / ZARR_JSON[array]
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    problems = verify(zstore)
    assert any(ZARR_JSON[array].rsplit("/", 1)[0] in p for p in problems), problems


def test_a_stream_the_root_no_longer_lists_is_reported(zstore):
    # A damaged name in the root's list makes the stream look unlisted; its records must not vanish quietly.
    path = zstore / "zarr.json"
    meta = json.loads(path.read_text())
    streams = meta["attributes"]["spikestore"]["streams"]
    streams[streams.index(STREAM)] = "output/fd"
    path.write_text(json.dumps(meta))
    problems = verify(zstore)
    assert any(STREAM in p and "not list" in p for p in problems), problems


def test_an_empty_array_a_kill_left_without_its_zarr_json_is_not_damage(zstore):
    # A writer killed while creating a segment: its entry commits no record, its folder holds a torn
    # chunk but no zarr.json yet (tools/stress_crash.py met this after a kill inside a flush).
    path = zstore / ZARR_JSON["stream"]
    meta = json.loads(path.read_text())
    doc = meta["attributes"]["spikestore"]
    doc["segments"].append(doc["segments"][-1] | {"array": "seg000009", "start": doc["count"], "count": 0})
    path.write_text(json.dumps(meta))
    (zstore / "output/fc/seg000009").mkdir()
    (zstore / "output/fc/seg000009/c.0.0.0").write_bytes(b"torn")
    assert verify(zstore) == []
    assert len(spikestore.open(zstore)[STREAM]) == doc["count"]
    # With a record committed to it, the same folder is damage.
    doc["segments"][-1]["count"], doc["count"] = 1, doc["count"] + 1
    path.write_text(json.dumps(meta))
    assert any("seg000009" in p and "zarr.json" in p for p in verify(zstore))


# -- HDF5: damaged metadata, truncated files -------------------------------------------------------


def _chunk_ranges(path: Path) -> list[tuple[int, int]]:
    out = []
    with h5py.File(path, "r") as f:
        def visit(_name, obj):
            if isinstance(obj, h5py.Dataset):
                for i in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(i)
                    out.append((info.byte_offset, info.byte_offset + info.size))
        f.visititems(visit)
    return out


@pytest.fixture(scope="module")
def flips(pristine, tmp_path_factory):
    """Reading and verifying the HDF5 store with one metadata byte flipped, at ~100 offsets.

    Returns ``(offset, read, reported, error)`` per offset: ``read`` is ``"exact"``,
    ``"wrong"``, ``"error"`` (a SpikestoreError) or ``"plain error"`` (anything else).
    """
    src = pristine / "s.h5"
    data = src.read_bytes()
    truth = contents(src)
    chunks = _chunk_ranges(src)
    meta = [i for i in range(len(data)) if not any(a <= i < b for a, b in chunks)]
    out = []
    tmp = tmp_path_factory.mktemp("flips")
    with pytest.MonkeyPatch.context() as mp:
        # SWMR readers retry a metadata read that fails its checksum for about a second (a live
        # writer may be rewriting it); these files have no writer, so one attempt says the same.
        mp.setattr("spikestore.backends.hdf5._handles.READ_ATTEMPTS", 1)
        for off in meta[:: max(1, len(meta) // 100)]:
            damaged = bytearray(data)
            damaged[off] ^= 0xFF
            path = tmp / f"flip{off}.h5"
            path.write_bytes(bytes(damaged))
            error = ""
            try:
                read = "exact" if same_contents(contents(path), truth) else "wrong"
            except SpikestoreError:
                read = "error"
            except Exception as exc:  # noqa: BLE001 - the point: none may escape
                read, error = "plain error", f"{type(exc).__name__}: {exc}"
            out.append((off, read, bool(verify(path)), error))
            path.unlink()
    return out


def test_flipped_hdf5_metadata_never_gives_wrong_records_that_verify_calls_intact(flips):
    assert len(flips) >= 100
    outcomes: dict[str, int] = {}
    for off, read, reported, _ in flips:
        assert read != "wrong" or reported, f"byte {off}: wrong records and verify says intact"
        outcome = f"{read}, {'reported' if reported else 'intact'}"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(outcomes)


def test_flipped_hdf5_metadata_raises_only_spikestore_errors(flips):
    plain = [f"byte {off}: {error}" for off, read, _, error in flips if read == "plain error"]
    assert not plain, plain


def _time_verify(path: Path) -> tuple[float, list[str]]:
    t = time.perf_counter()
    problems = verify(path)
    return time.perf_counter() - t, problems


def test_verify_of_a_truncated_hdf5_file_takes_about_as_long_as_of_a_clean_one(tmp_path):
    path = tmp_path / "big.h5"
    write_small_store(path, steps=200)
    clean, problems = min(_time_verify(path) for _ in range(3))
    assert problems == []
    size = path.stat().st_size
    for frac in (0.5, 0.8, 0.95):
        cut = tmp_path / f"cut{frac}.h5"
        shutil.copy(path, cut)
        os.truncate(cut, int(size * frac))
        took, problems = _time_verify(cut)
        assert problems and any("truncated" in p for p in problems), problems
        assert took < 10 * clean + 1.0, (frac, took, clean)
        assert cli_verify(cut) == 1
        print(f"truncated to {frac:.0%}: {took:.3f} s, clean {clean:.3f} s, ratio {took / clean:.1f}")


def test_a_flipped_document_byte_that_still_parses_is_reported(pristine, tmp_path):
    # The JSON of a document lives in the metadata region: a flip that keeps it valid JSON changes
    # a number, and the document's own bookkeeping (or the arrays) must disagree.
    src = pristine / "s.h5"
    data = src.read_bytes()
    doc = data.index(b'"count": 12')
    for delta in (0, 1):
        damaged = bytearray(data)
        damaged[doc + 9 + delta] ^= 0x01  # '1' -> '0', '2' -> '3'
        path = tmp_path / f"c{delta}.h5"
        path.write_bytes(bytes(damaged))
        assert verify(path)
        with pytest.raises(SpikestoreError):
            contents(path)
