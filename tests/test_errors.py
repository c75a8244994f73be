"""Every error spikestore raises on purpose is a SpikestoreError, and also the built-in it means."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import spikestore
from spikestore import errors
from spikestore.codecs import decode_spikes, encode_spikes


def test_every_error_class_is_in_the_tree_and_exported():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.SpikestoreError), name
    documented = errors.__doc__
    assert all(name in documented for name in errors.__all__)
    assert [n for n in errors.__all__ if getattr(spikestore, n, None) is not getattr(errors, n)] == []


def test_an_out_of_range_record_is_a_record_index_error(tmp_path):
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/1", np.ones(3))
    s = spikestore.open(tmp_path / "s.zarr")["output/1"]
    with pytest.raises(errors.RecordIndexError, match="record 5 out of range") as info:
        s[5]
    assert isinstance(info.value, IndexError)
    assert [r.tolist() for r in s] == [[1.0, 1.0, 1.0]]  # iteration still ends on IndexError


def test_a_damaged_spike_chunk_is_a_checksum_error_and_a_value_error():
    enc = encode_spikes(np.packbits(np.random.default_rng(0).random(4000) < 0.05, bitorder="little"))
    with pytest.raises(errors.ChecksumError) as info:
        decode_spikes(enc[:5])
    assert isinstance(info.value, ValueError)  # numcodecs' contract for a codec that cannot decode
    with pytest.raises(errors.FormatError, match="upgrade"):
        decode_spikes(bytes([99]) + enc[1:])


def test_a_missing_extra_is_a_missing_dependency_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    from spikestore import plot

    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/1", np.ones((2, 5), np.float32))
    with pytest.raises(errors.MissingDependencyError, match=r"spikestore\[plot\]") as info:
        plot.raster(spikestore.open(tmp_path / "s.zarr")["output/1"], 0)
    assert isinstance(info.value, ImportError)
