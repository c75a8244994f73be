"""HDF5 group headers never get continuation chunks while a store grows.

Outside SWMR, HDF5 flushes a structure window's changes in no particular
order; a group header extended by a continuation chunk can be written
before the chunk it points at, and a writer killed in between loses the
group (a whole stream). So every header of a growing store must stay one
chunk: a stream of hundreds of segments, with a document far larger than
its first room, is rebuilt with more room instead of being extended.
"""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from h5py import h5o

import spikestore
from spikestore import verify
from spikestore.backends.hdf5 import _headers


def _header_chunks(path) -> dict[str, int]:
    """Number of header chunks of every group in the file (a live writer's: opened SWMR)."""
    found = {}
    with h5py.File(path, "r", swmr=True, locking=False) as f:
        found["/"] = h5o.get_info(f["/"].id).hdr.nchunks

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                found[name] = h5o.get_info(obj.id).hdr.nchunks
        f.visititems(visit)
    return found


def _record(i: int) -> np.ndarray:
    rows = (1, 2, 3, 5)[i % 4]  # a new shape every record: a new segment, a bigger document
    return (np.random.default_rng(i).random((rows, 6)) < 0.3).astype(np.float32)


def test_a_stream_of_hundreds_of_segments_keeps_every_header_in_one_chunk(tmp_path, monkeypatch):
    path = tmp_path / "run.h5"
    rebuilds = []
    real = _headers.rebuild
    monkeypatch.setattr(_headers, "rebuild", lambda *a, **k: rebuilds.append(a[1]) or real(*a, **k))
    n = 260
    with spikestore.Store(path, flush_interval=1000) as store:
        for i in range(n):
            store.set_step(i)
            store.append("output/a", _record(i))
            store.append("v/b", np.full(3, i, np.float64))
            if i % 20 == 19:
                store.flush()
                chunks = _header_chunks(path)
                assert set(chunks.values()) == {1}, (i, chunks)
    assert set(_header_chunks(path).values()) == {1}
    # The document doubled its room a few times; each doubling rebuilt the stream, nothing else did.
    assert 2 <= len(rebuilds) <= 8 and set(rebuilds) == {"output/a"}, rebuilds
    run = spikestore.open(path)
    s = run["output/a"]
    assert len(s) == n and len(s.segments) == n
    for i in (0, 1, 77, n - 1):
        np.testing.assert_array_equal(s[i], _record(i))
    np.testing.assert_array_equal(run["v/b"][n - 1], np.full(3, n - 1, np.float64))
    run.close()
    assert verify(path) == []


def test_a_quantity_of_many_layers_is_rebuilt_not_extended(tmp_path):
    # A quantity group's header has room for 256 streams at first.
    path = tmp_path / "run.h5"
    n = 300
    with spikestore.Store(path) as store:
        for j in range(n):
            store.append(f"output/layer{j}", np.ones(2, np.float32))
        store.flush()
        assert set(_header_chunks(path).values()) == {1}
    run = spikestore.open(path)
    assert len(run.streams) == n and all(len(run[k]) == 1 for k in run.streams)
    run.close()
    assert verify(path) == []


@pytest.mark.parametrize("links", [1, 2000, _headers._MAX_LINKS])
def test_header_room_is_what_hdf5_can_hold(tmp_path, links):
    # One header chunk holds at most 64 KiB: the largest room asked for must still be granted.
    with h5py.File(tmp_path / "f.h5", "w", libver=("v110", "v110")) as f:
        g = _headers.new_group(f, 2, links)
        total = h5o.get_info(g.id).hdr.space.total
    assert total >= links * _headers._LINK_BYTES


def _unlist(path, key: str) -> None:
    """Drop ``key`` from the root document, in place (as a writer killed before listing it leaves it)."""
    with h5py.File(path, "r+", locking=False) as f:
        raw = f.attrs.get_id("spikestore")
        value = np.empty((), raw.dtype)
        raw.read(value)
        doc = json.loads(bytes(value).rstrip(b"\0"))
        doc["streams"].remove(key)
        raw.write(np.array(json.dumps(doc).encode(), dtype=raw.dtype))


def _tear_header(path, node: str) -> None:
    """Change one byte inside ``node``'s header, past its prefix: a write cut short by a kill."""
    with h5py.File(path, "r", locking=False) as f:
        addr = h5o.get_info(f[node].id).addr
    with open(path, "r+b") as fh:
        fh.seek(addr + 60)
        b = fh.read(1)
        fh.seek(addr + 60)
        fh.write(bytes([b[0] ^ 0xFF]))


RESUME = """
import sys, numpy as np, spikestore
with spikestore.Store(sys.argv[1], mode="a") as store:
    store.append("grad_input/new", np.full(4, 7, np.float32))
print("closed")
"""


def test_a_half_written_new_stream_is_replaced_when_the_store_is_resumed(tmp_path):
    # A writer killed while writing a new stream's group header (Linux stops a write at a page
    # boundary when SIGKILL arrives) leaves that group linked but unreadable. The resumed writer
    # must neither hang on it (HDF5 retried its checksum for hours in SWMR mode) nor fail the store.
    path = tmp_path / "run.h5"
    with spikestore.Store(path) as store:
        store.append("grad_input/old", np.arange(5, dtype=np.float32))
        store.append("grad_input/new", np.ones(4, np.float32))  # (no record of it is committed below)
    _unlist(path, "grad_input/new")
    _tear_header(path, "grad_input/new")
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    proc = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and "closed" in proc.stdout, proc.stderr[-3000:]
    run = spikestore.open(path)
    np.testing.assert_array_equal(run["grad_input/old"][:], np.arange(5, dtype=np.float32)[None])
    np.testing.assert_array_equal(run["grad_input/new"][:], np.full((1, 4), 7, np.float32))
    run.close()
    assert verify(path) == []
