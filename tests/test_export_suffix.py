"""``spikestore.export.export`` picks the format from the output's suffix."""

from __future__ import annotations

import numpy as np
import pytest

import spikestore
from spikestore import InvalidArgumentError
from spikestore.export import SUFFIXES, export, format_for


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "run.zarr"
    with spikestore.Store(path) as st:
        for step in range(3):
            st.set_step(step)
            st.append("v/fc", np.full((2, 5), step + 0.5, np.float32))
    return path


@pytest.mark.parametrize(("name", "fmt"), [("a.nwb", "nwb"), ("a.h5", "hdf5"), ("a.HDF5", "hdf5"),
                                           ("a.parquet", "parquet"), ("dir/a.npz", "npz")])
def test_each_suffix_names_its_format(name, fmt):
    assert format_for(name) == fmt and SUFFIXES[name[name.rindex("."):].lower()] == fmt


def test_export_without_format_uses_the_suffix_and_format_wins(store, tmp_path):
    out = export(store, tmp_path / "o.npz")
    assert np.load(out, allow_pickle=False)["v/fc"][2].tolist() == [[2.5] * 5] * 2
    out = export(store, tmp_path / "o.data", "npz")  # an explicit format wins, whatever the suffix
    assert np.load(out, allow_pickle=False)["v/fc"].shape == (3, 2, 5)


@pytest.mark.parametrize("name", ["o.csv", "o"])
def test_an_unknown_suffix_names_the_accepted_ones(store, tmp_path, name):
    with pytest.raises(InvalidArgumentError, match=r"\.nwb.*\.h5.*\.hdf5.*\.parquet.*\.npz.*format"):
        export(store, tmp_path / name)
    assert not (tmp_path / name).exists()
