"""The CI slice of tools/stress_crash.py and tools/fuzz_store.py: a few SIGKILL trials per
backend lose no flushed record, and a few tampered stores per backend are never read wrong, never raise
a foreign exception, crash or hang. The tools themselves run hundreds of cases (docs/reliability.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

import fuzz_store  # noqa: E402 - the tools folder, on sys.path above, is not a package
import stress_crash  # noqa: E402


@pytest.fixture(scope="module")
def ctx():
    """The tools' fork server (imports spikestore once; sessions and checks fork from it)."""
    return stress_crash._context()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_sigkill_trials_lose_no_flushed_record(ctx, backend):
    report = stress_crash.run_backend(backend, 4, seed=3, n_ops=60, ctx=ctx)
    assert stress_crash.failures(report) == 0, report
    assert report["records_compared"] > 0 and report["sessions"] >= 8


@pytest.mark.parametrize(("backend", "cases"), [("zarr", 14), ("hdf5", 8)])  # (a damaged HDF5 file reads in ~1.5 s)
def test_tampered_stores_are_never_read_wrong(ctx, backend, cases):
    report = fuzz_store.run_backend(ctx, backend, seed=3, quick=True, show=2, limit=cases)
    assert report["failures"] == 0, report["examples"]
    assert report["cases"] == cases
