"""Shared fixtures: a fresh store path per test (one place to add backends)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import write_small_store

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


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``s.zarr`` and ``s.h5`` written by :func:`helpers.write_small_store`, once per module."""
    d = tmp_path_factory.mktemp("pristine")
    write_small_store(d / "s.zarr")
    write_small_store(d / "s.h5")
    return d


@pytest.fixture()
def zstore(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the pristine Zarr store, for a test to damage."""
    path = tmp_path / "s.zarr"
    shutil.copytree(pristine / "s.zarr", path)
    return path


@pytest.fixture()
def hstore(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the pristine HDF5 store, for a test to damage."""
    path = tmp_path / "s.h5"
    shutil.copy(pristine / "s.h5", path)
    return path


@pytest.fixture(scope="session")
def demo_store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``runs/demo.zarr`` as the README's main command writes it, once per session.

    ``bash tools/demo.sh`` runs ``tools/demo.py`` with no arguments (three epochs, 66 steps, into
    ``runs/demo.zarr``); so does this fixture, in the folder (about 25 s on the 2-core development
    machine). Shared by the docs tests (tests/test_docs_executed.py, tests/test_notebook.py); treat it
    as read-only. ``SPIKESTORE_DEMO_DIR`` names a folder that already holds one, to skip the demo.
    """
    import subprocess
    import sys

    if os.environ.get("SPIKESTORE_DEMO_DIR"):
        return Path(os.environ["SPIKESTORE_DEMO_DIR"]).resolve()
    folder = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "tools" / "demo.py")],
                   cwd=folder, check=True, capture_output=True, timeout=900)
    return folder


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A moto S3 server on loopback for the module's tests (``tests/s3_server.py``)."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from s3_server import moto_s3

    with moto_s3() as server:
        yield server


@pytest.fixture()
def url(s3: Any) -> Any:
    """A fresh store URL in a fresh bucket of :func:`s3`, carrying the server's storage_options."""
    from spikestore.backends import StoreURL

    return StoreURL(f"s3://{s3.new_bucket()}/run.zarr", s3.storage_options)
