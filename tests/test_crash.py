"""SIGKILL at random moments leaves a readable store (DESIGN §4, §7)."""

from __future__ import annotations

import random

import pytest
from helpers import check_flushed_prefix, crash_record, kill_writer_after

import spikestore


@pytest.mark.parametrize("trial", range(6))
def test_sigkill_leaves_every_flushed_record_bit_exact(tmp_path, trial):
    path = tmp_path / "crash.zarr"
    random.seed(trial)
    flushed = kill_writer_after(path, 0.05 + random.random() * 1.5)

    run = spikestore.open(path)
    assert run.writer["status"] == "open"  # it never closed
    a, last = check_flushed_prefix(run, flushed)

    # A crashed store can be resumed: append continues after the last step.
    with spikestore.Store(path, mode="a") as store:
        assert store.step == last + 1
        store.append("output/a", crash_record(0))
    assert len(spikestore.open(path)["output/a"]) == len(a) + 1
