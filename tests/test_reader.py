"""The minimal read path and damage detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import spikestore
from spikestore import DamagedStoreError, FormatError


def _write(path, n=20):
    with spikestore.Store(path, chunk_bytes=64) as store:
        for i in range(n):
            store.set_step(i)
            store.append("output/x", (torch.arange(40) % (i + 2) == 0).float())
    return path


def test_indexing_forms(tmp_path):
    s = spikestore.open(_write(tmp_path / "s.zarr"))["output/x"]
    ref = np.stack([(np.arange(40) % (i + 2) == 0).astype(np.float32) for i in range(20)])
    np.testing.assert_array_equal(s[-1], ref[-1])
    np.testing.assert_array_equal(s[3:17:2], ref[3:17:2])
    np.testing.assert_array_equal(s[[5, 1, 19]], ref[[5, 1, 19]])
    np.testing.assert_array_equal(s[np.arange(20) % 2 == 0], ref[::2])
    np.testing.assert_array_equal(np.stack(list(s)), ref)
    with pytest.raises(IndexError):
        s[20]


def test_a_missing_chunk_inside_the_committed_range_is_damage(tmp_path):
    path = _write(tmp_path / "s.zarr")
    (path / "output/x/seg000000/c.1.0").unlink()
    s = spikestore.open(path)["output/x"]
    s[0]
    with pytest.raises(DamagedStoreError, match="chunk 1 .*missing"):
        s[s.segments[0].chunk_records]


def test_a_corrupt_chunk_fails_its_checksum(tmp_path):
    path = _write(tmp_path / "s.zarr")
    chunk = path / "output/x/seg000000/c.0.0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(DamagedStoreError, match="corrupt"):
        spikestore.open(path)["output/x"][0]


def test_invalid_metadata_is_a_format_error_not_a_crash(tmp_path):
    path = _write(tmp_path / "s.zarr")
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["spikestore"]["format_version"] = "one"
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="format_version"):
        spikestore.open(path)
    meta["attributes"]["spikestore"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="upgrade"):
        spikestore.open(path)
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(FormatError):
        spikestore.open(path)
