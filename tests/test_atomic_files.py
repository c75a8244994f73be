"""Publishing files by write-then-replace (spikestore._atomic_files)."""

from __future__ import annotations

import pytest

from spikestore._atomic_files import replacing, write_replacing
from spikestore.errors import InvalidArgumentError


def test_a_finished_write_replaces_the_old_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    with replacing(out) as tmp:
        tmp.write_bytes(b"new")
        assert out.read_bytes() == b"old"  # readers see the old file until the end
    assert out.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_folder_output_replaces_a_folder(tmp_path):
    out = tmp_path / "tables"
    out.mkdir()
    (out / "stale.parquet").write_bytes(b"x")
    with replacing(out, folder=True) as tmp:
        (tmp / "spikes.parquet").write_bytes(b"y")
    assert [p.name for p in out.iterdir()] == ["spikes.parquet"]
    with pytest.raises(ValueError), replacing(out, folder=True) as tmp:
        (tmp / "half").write_bytes(b"z")
        raise ValueError
    assert [p.name for p in out.iterdir()] == ["spikes.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]


def test_write_replacing_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "missing-folder" / "x"
    with pytest.raises(FileNotFoundError):
        write_replacing(str(target), b"data")
    assert list(tmp_path.iterdir()) == []
    write_replacing(str(tmp_path / "x"), b"data")
    assert (tmp_path / "x").read_bytes() == b"data"


def test_a_temporary_may_keep_the_suffix_that_writers_check(tmp_path):
    out = tmp_path / "run.nwb"
    with replacing(out, keep_suffix=True) as tmp:
        assert tmp.suffix == ".nwb" and tmp.parent == tmp_path and tmp != out
        tmp.write_bytes(b"x")
    assert out.read_bytes() == b"x"


def test_a_missing_folder_is_a_clear_error_and_nothing_is_created(tmp_path):
    out = tmp_path / "no" / "such" / "run.nwb"
    with pytest.raises(InvalidArgumentError, match=r"folder .*no/such does not exist; create it first"), \
            replacing(out):
        raise AssertionError("never reached")
    assert not (tmp_path / "no").exists()
