"""Shared fixtures: a fresh store path per test (one place to add backends)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

BACKENDS = ["zarr", "hdf5"]


@pytest.fixture(params=BACKENDS)
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Path of a store that does not exist yet, for each backend."""
    suffix = {"zarr": ".zarr", "hdf5": ".h5"}[request.param]
    return tmp_path / f"run{suffix}"


@pytest.fixture(autouse=True, scope="session")
def _compiled_kernels() -> None:
    """Compile the write path's kernels once, before any test is timed.

    A fresh clone compiles them on first use (seconds), which would trip
    hypothesis deadlines in whichever test happens to run first.
    """
    from spikestore.codecs import _packing as packing

    assert packing.load_kernels() or not packing.KERNELS
