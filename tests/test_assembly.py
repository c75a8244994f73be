"""How the writer sizes chunks (spikestore._write.assembly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spikestore
from spikestore._write.assembly import chunk_records_for


@pytest.mark.parametrize(("record_bytes", "chunk_bytes", "want"), [
    (32, 256 << 10, 8192),          # small records: chunk_bytes decides
    (8 << 10, 256 << 10, 32),
    (229_376, 256 << 10, 4),        # big records: at least 4 a chunk (one file per 4)...
    (458_752, 256 << 10, 4),
    (458_752, 4 << 20, 9),          # ...unless chunk_bytes asks for more
    (2 << 20, 256 << 10, 2),        # ...and chunks stay within 4 MiB
    (8 << 20, 256 << 10, 1),
    (1, 1 << 30, 1 << 16),          # capped
    (64, 64, 1),                    # tiny chunk_bytes still mean what they say for small records
])
def test_chunk_records(record_bytes, chunk_bytes, want):
    assert chunk_records_for(record_bytes, chunk_bytes) == want


def test_chunks_never_exceed_what_readers_accept(tmp_path):
    # Readers refuse a chunk that decodes to more than 2 GiB (_format.checks): the writer
    # never makes one, and a record that alone is larger fails its stream with a clear error.
    assert chunk_records_for(1 << 20, 1 << 31) * (1 << 20) <= 1 << 31
    with pytest.raises(spikestore.InvalidValueError, match="larger than one chunk"):
        chunk_records_for((1 << 31) + 1, 256 << 10)
    with pytest.raises(spikestore.InvalidArgumentError, match="chunk_bytes"):
        spikestore.Store(tmp_path / "s.zarr", chunk_bytes=(1 << 31) + 1)
    assert not (tmp_path / "s.zarr").exists()  # refused before anything was created


def test_big_spike_records_share_chunks_and_read_back(tmp_path):
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(0)
    frames = [(rng.random((8, 32, 16, 28, 28)) < 0.05).astype(np.float32) for _ in range(6)]
    with spikestore.Store(path) as store:
        for step, f in enumerate(frames):
            store.set_step(step)
            store.append("output/conv", torch.from_numpy(f))
    s = spikestore.open(path)["output/conv"]
    assert s.doc["segments"][0]["chunk_records"] == 4  # 458,752 packed bytes a record
    for step, f in enumerate(frames):
        np.testing.assert_array_equal(s[step], f)


def test_new_streams_index_4096_records_a_chunk_and_read_across_chunks(tmp_path):
    """Each commit re-encodes the open index chunk, so new streams keep it at 4096 records."""
    path = tmp_path / "s.zarr"
    n = 4096 + 10
    with spikestore.Store(path) as store:
        for step in range(n):
            store.set_step(step)
            store.append("rate/fc", float(step))
    s = spikestore.open(path)["rate/fc"]
    assert s.doc["index"]["chunk_records"] == 4096
    assert (path / "rate/fc/step/c.1").is_file()  # the second index chunk
    np.testing.assert_array_equal(s.steps, np.arange(n))
    assert s[n - 1] == n - 1
