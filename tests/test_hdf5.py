"""The HDF5 backend: same records as Zarr, plain h5py readers, SWMR, crashes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import (
    check_flushed_prefix,
    crash_record,
    deep_net,
    kill_writer_after,
    record_streams,
    run_steps,
    write_example_store,
)
from hypothesis import HealthCheck, given, settings
from numcodecs import Fletcher32
from spikingjelly.activation_based import neuron

import spikestore
from spikestore import DamagedStoreError, StoreInUseError, StoreNotFoundError
from spikestore import monitor as ss

DOC = Path(__file__).resolve().parent.parent / "docs" / "format.md"


def _records(run: spikestore.Run) -> dict:
    """Everything a reader sees: per stream, records, steps, calls and docs."""
    out = {}
    for key in run.streams:
        s = run[key]
        # (codecs differ by backend, and so do the tags that bind each chunk: they cover its checksum)
        segs = [{k: v for k, v in d.items() if k not in ("codec", "tags", "tail")} for d in s.doc["segments"]]
        out[key] = ([s[i] for i in range(len(s))], s.steps.tolist(), s.calls.tolist(), segs,
                    s.selection, s.attrs)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key, (ra, *rest_a) in a.items():
        rb, *rest_b = b[key]
        assert rest_a == rest_b, key
        assert len(ra) == len(rb)
        for x, y in zip(ra, rb, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)


def _flags(path: Path) -> int:
    with open(path, "rb") as fh:
        return fh.read(12)[11]


# -- same logical store as Zarr ---------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(records=record_streams())
def test_any_records_read_back_the_same_as_from_zarr(tmp_path_factory, records):
    d = tmp_path_factory.mktemp("both")
    for path in (d / "s.zarr", d / "s.h5"):
        with spikestore.Store(path, chunk_bytes=64) as store:
            for i, r in enumerate(records):
                store.set_step(i // 2)
                store.append("output/layer", r)
                store.append("v/layer", np.float32(i))
    z, h = _records(spikestore.open(d / "s.zarr")), _records(spikestore.open(d / "s.h5"))
    _assert_same(z, h)
    for got, want in zip(h["output/layer"][0], records, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float16, torch.bfloat16,
                                   torch.float32, torch.float64])
def test_torch_dtypes_round_trip(tmp_path, dtype):
    g = torch.Generator().manual_seed(0)
    binary = (torch.rand(3, 5, 9, generator=g) < 0.3).to(dtype)
    raw = binary if dtype == torch.bool else (torch.rand(3, 5, 9, generator=g) * 100).to(dtype)
    with spikestore.Store(tmp_path / "t.hdf5") as store:  # .hdf5 selects HDF5 too
        store.append("output/x", binary)
        store.append("v/x", raw)
    run = spikestore.open(tmp_path / "t.hdf5")
    assert torch.equal(run["output/x"].tensor(0), binary) and torch.equal(run["v/x"].tensor(0), raw)
    assert h5py.is_hdf5(tmp_path / "t.hdf5")


def test_monitors_record_identical_streams_on_both_backends(tmp_path):
    got = {}
    for path in (tmp_path / "m.zarr", tmp_path / "m.h5"):
        net = deep_net(4.0)
        with spikestore.Store(path) as store:
            mons = [ss.OutputMonitor(net, neuron.IFNode, store=store),
                    ss.AttributeMonitor("v", False, net, neuron.IFNode, store=store),
                    ss.GradInputMonitor(net, neuron.IFNode, function_on_grad_input=torch.norm,
                                        store=store)]
            run_steps(net, "m", 4, store)
            for m in mons:
                m.remove_hooks()
        got[path.suffix] = _records(spikestore.open(path))
    assert len(got[".zarr"]) == 12
    _assert_same(got[".zarr"], got[".h5"])


def test_backend_is_chosen_by_suffix_or_name(tmp_path):
    with spikestore.Store(tmp_path / "x.store", backend="hdf5") as store:
        store.append("output/a", np.ones(3))
    assert h5py.is_hdf5(tmp_path / "x.store")
    assert len(spikestore.open(tmp_path / "x.store", backend="hdf5")["output/a"]) == 1
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(StoreNotFoundError):
        spikestore.open(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(StoreNotFoundError):
        spikestore.open(tmp_path / "other.h5")
    # A file this process already has open with plain h5py (no SWMR) opens too.
    with h5py.File(tmp_path / "x.store", "r") as f:
        assert spikestore.open(tmp_path / "x.store", backend="hdf5")["output/a"][0].tolist() == [1, 1, 1]
        assert "output" in f


def test_append_mode_durable_and_one_writer_per_process(tmp_path):
    path = tmp_path / "a.h5"
    with spikestore.Store(path, durable=True) as store:
        store.append("output/a", np.ones((2, 9)))
        with pytest.raises(StoreInUseError, match=f"process {os.getpid()} on "):
            spikestore.Store(path, mode="a")
        store.set_step(1)
        store.append("output/a", np.ones((2, 9)))  # the first writer is unharmed
    with spikestore.Store(path, mode="a") as store:
        assert store.step == 2
        store.append("output/a", np.zeros((2, 9)))
        store.append("output/b", np.arange(4.0))
    run = spikestore.open(path)
    assert run["output/a"].steps.tolist() == [0, 1, 2] and run.streams == ["output/a", "output/b"]
    assert run.writer["status"] == "closed" and _flags(path) == 0


# -- plain h5py + hdf5plugin readers --------------------------------------------------------
def _documented_reader() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 10. HDF5"):]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[-1]


PLAIN = """
import sys
{reader}
assert "spikestore" not in sys.modules, "the plain reader must not need spikestore"
out = {{}}
with h5py.File(PATH, "r", swmr=True) as f:
    counts = {{key: json.loads(f[stream_group(key)].attrs["spikestore"])["count"]
              for key in json.loads(f.attrs["spikestore"])["streams"]}}
for key, n in counts.items():
    for i in range(n):
        out[f"{{key}}|{{i}}"], out[f"{{key}}|{{i}}|step"] = read_record(key, i)
np.savez(sys.argv[2], **out)
"""


def test_the_documented_plain_h5py_reader_gets_the_same_records(tmp_path):
    path = tmp_path / "plain.h5"
    write_example_store(path)
    script = tmp_path / "plain.py"
    reader = _documented_reader().replace('PATH = "run.h5"', f"PATH = {str(path)!r}")
    script.write_text(PLAIN.format(reader=reader))
    subprocess.run([sys.executable, "-I", str(script), str(path), str(tmp_path / "o.npz")], check=True)
    got = np.load(tmp_path / "o.npz")
    run = spikestore.open(path)
    assert len(got.files) == 2 * sum(len(run[k]) for k in run.streams)
    for key in run.streams:
        s = run[key]
        for i in range(len(s)):
            want = s[i].astype(np.float32) if s.segments[0].doc["dtype"] == "bfloat16" else s[i]
            np.testing.assert_array_equal(got[f"{key}|{i}"], want)
            assert got[f"{key}|{i}"].dtype == want.dtype and got[f"{key}|{i}|step"] == s.steps[i]


def test_datasets_carry_the_filters_their_chunks_were_encoded_for(tmp_path):
    path = tmp_path / "f.h5"
    x = (torch.rand(5, 3, 421) < 0.2).float()
    with spikestore.Store(path) as store:
        for r in x:
            store.append("output/conv", r)
            store.append("v/conv", r + 0.5)  # raw records of 4 kB and more: blosc
            store.append("v/norm", r.sum())  # small raw records: zstd
    with h5py.File(path, "r") as f:
        def pipeline(name: str) -> list[int]:
            plist = f[name].id.get_create_plist()
            return [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]

        assert pipeline("output/conv/seg000000") == [32015, h5py.h5z.FILTER_FLETCHER32]
        assert pipeline("v/conv/seg000000") == [32001, h5py.h5z.FILTER_FLETCHER32]
        assert pipeline("v/norm/seg000000") == [32015, h5py.h5z.FILTER_FLETCHER32]
        assert pipeline("v/conv/step") == [32001, h5py.h5z.FILTER_FLETCHER32]
        packed = f["output/conv/seg000000"][:]
        assert packed.dtype == np.uint8 and packed.shape == (5, 3, 53)
        np.testing.assert_array_equal(np.unpackbits(packed, axis=-1, count=421, bitorder="little"), x)
        np.testing.assert_array_equal(f["v/norm/seg000000"][:], x.sum((1, 2)).numpy())
        np.testing.assert_array_equal(f["v/conv/seg000000"][:], (x + 0.5).numpy())
        np.testing.assert_array_equal(f["v/conv/step"][:], np.zeros(5))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 719, 720, 721, 4096, 100_001])
@pytest.mark.parametrize("fill", ["random", "ones", "0xff"])
def test_fletcher32_is_hdf5s(tmp_path, n, fill):
    rng = np.random.default_rng(n)
    data = {"random": rng.integers(0, 256, n, dtype=np.uint8),
            "ones": np.ones(n, np.uint8), "0xff": np.full(n, 0xFF, np.uint8)}[fill]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("x", data=data, chunks=(max(n, 1),), maxshape=(None,), fletcher32=True)
        _, chunk = d.id.read_direct_chunk((0,)) if n else (0, bytes(4))
    if n:  # numcodecs' Fletcher32, which spikestore uses, appends exactly what HDF5's filter wrote
        assert bytes(Fletcher32().encode(bytes(chunk[:-4]))) == bytes(chunk)


def test_damaged_chunks_fail_their_checksum_in_spikestore_and_in_h5py(tmp_path):
    path = tmp_path / "d.h5"
    with spikestore.Store(path, chunk_bytes=64) as store:
        for i in range(20):
            store.append("output/x", (np.arange(40) % (i + 2) == 0).astype(np.float32))
    with h5py.File(path, "r") as f:
        info = f["output/x/seg000000"].id.get_chunk_info(1)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    s = spikestore.open(path)["output/x"]
    s[0]
    with pytest.raises(DamagedStoreError, match="corrupt"):
        s[s.segments[0].chunk_records]
    with h5py.File(path, "r") as f, pytest.raises(OSError):
        f["output/x/seg000000"][:]


def test_large_documents_grow_in_place(tmp_path, monkeypatch):
    # Every structure window ends by starting SWMR again, and only a window
    # creates (or re-creates, to grow) a document attribute: count both.
    counts = {"swmr": 0, "attrs": 0}
    swmr_mode, create = h5py.File.swmr_mode, h5py.AttributeManager.create

    def start_swmr(f, value):
        counts["swmr"] += bool(value)
        swmr_mode.fset(f, value)

    def create_attr(attrs, *args, **kwargs):
        counts["attrs"] += 1
        return create(attrs, *args, **kwargs)

    monkeypatch.setattr(h5py.File, "swmr_mode", property(swmr_mode.fget, start_swmr))
    monkeypatch.setattr(h5py.AttributeManager, "create", create_attr)
    path = tmp_path / "g.h5"
    with spikestore.Store(path, chunk_bytes=64) as store:
        for i in range(400):  # a new segment every record: a ~150 kB stream document
            store.set_step(i)
            store.append("output/x", np.ones(1 + i % 200, np.float32))
            if i % 50 == 0:
                store.flush()
        windows = counts["swmr"]
    s = spikestore.open(path)["output/x"]
    assert len(s.segments) == 400 and s[399].shape == (200,)
    assert windows < 400 + 20  # one per segment, a few for the stream and growing documents
    with h5py.File(path, "r") as f:
        assert len(f["output/x"].attrs["spikestore"]) > 65536
        reserved = f["output/x"].attrs.get_id("spikestore").dtype.itemsize
    assert reserved & (reserved - 1) == 0  # the space doubles when outgrown, so it seldom moves:
    assert counts["attrs"] <= 2 + (reserved // 4096).bit_length()  # root, stream, then each doubling


# -- SWMR: live readers -----------------------------------------------------------------
LIVE_WRITER = textwrap.dedent("""
    import sys, time, numpy as np, spikestore
    path, stop = sys.argv[1], sys.argv[2]
    with spikestore.Store(path, chunk_bytes=512) as store:
        i = 0
        while i < 40 or not __import__("os").path.exists(stop):
            store.set_step(i)
            store.append("output/a", (np.arange(64) % (i % 7 + 2) == 0).astype(np.float32))
            if i >= 20:  # a stream and segments that appear after SWMR started
                store.append("v/b", np.full(3 + (i // 10) % 2, i, np.float64))
            i += 1
            if i % 5 == 0:
                store.flush()
                print(i, flush=True)
            time.sleep(0.002)
""")


def _check_prefix(run: spikestore.Run) -> tuple[int, int]:
    a = run["output/a"]
    for j in range(len(a)):
        np.testing.assert_array_equal(a[j], (np.arange(64) % (j % 7 + 2) == 0).astype(np.float32))
    assert a.steps.tolist() == list(range(len(a)))
    nb = 0
    if "v/b" in run:
        b = run["v/b"]
        nb = len(b)
        for j in range(nb):
            i = 20 + j
            np.testing.assert_array_equal(b[j], np.full(3 + (i // 10) % 2, i, np.float64))
    return len(a), nb


def test_a_reader_in_another_process_follows_the_writer(tmp_path):
    path, stop = tmp_path / "live.h5", tmp_path / "stop"
    script = tmp_path / "w.py"
    script.write_text(LIVE_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(stop)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert int(proc.stdout.readline()) == 5
        run = spikestore.open(path)
        assert run.writer["status"] == "open"
        seen = [_check_prefix(run)]
        deadline = time.monotonic() + 60
        while (seen[-1][1] < 10 or len(seen) < 5) and time.monotonic() < deadline:
            time.sleep(0.05)
            run.refresh()
            seen.append(_check_prefix(run))
        assert seen[-1][1] >= 10, "the stream created after SWMR started never became visible"
        assert [a for a, _ in seen] == sorted(a for a, _ in seen) and seen[-1][0] > seen[0][0]
        # A second reader opened now agrees, and so does plain h5py (SWMR read).
        with h5py.File(path, "r", swmr=True) as f:
            assert json.loads(f.attrs["spikestore"])["writer"]["status"] == "open"
    finally:
        stop.touch()
        proc.wait(30)
    assert proc.returncode == 0
    run.refresh()
    assert run.writer["status"] == "closed"
    _check_prefix(run)


def test_a_reader_in_the_writers_process_follows_a_writer_thread(tmp_path):
    path = tmp_path / "live.h5"
    store = spikestore.Store(path, chunk_bytes=512)
    store.append("output/a", np.zeros(64, np.float32) + (np.arange(64) % 2 == 0))
    store.flush()
    done = threading.Event()

    def produce() -> None:
        for i in range(1, 300):
            store.set_step(i)
            store.append("output/a", (np.arange(64) % (i % 7 + 2) == 0).astype(np.float32))
            if i >= 20:
                store.append("v/b", np.full(3 + (i // 10) % 2, i, np.float64))
            if i % 25 == 0:
                store.flush()
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    run = spikestore.open(path)
    counts = [_check_prefix(run)]
    while not done.is_set():
        run.refresh()
        counts.append(_check_prefix(run))
    t.join()
    store.close()
    run.refresh()
    assert _check_prefix(run) == (300, 280)
    assert counts == sorted(counts) and len(set(counts)) > 2


# -- crashes ---------------------------------------------------------------------------
@pytest.mark.parametrize("trial", range(4))
def test_sigkill_leaves_every_flushed_record_bit_exact(tmp_path, trial, monkeypatch):
    monkeypatch.setattr("spikestore.backends.hdf5._handles.WINDOW_WAIT_S", 0.3)  # where it is read
    path = tmp_path / "crash.h5"
    flushed = kill_writer_after(path, 0.05 + (trial + 0.5) * 0.4)
    # HDF5 usually still says "open for write" here (spikestore copes); a kill
    # inside a structure window, between close and reopen, leaves the flags
    # clear, so they are not asserted.

    run = spikestore.open(path)
    assert run.writer["status"] == "open"
    a, last = check_flushed_prefix(run, flushed)
    run.close()

    with spikestore.Store(path, mode="a") as store:  # clears HDF5's writer flags
        assert store.step == last + 1
        store.append("output/a", crash_record(0))
    assert _flags(path) == 0
    assert len(spikestore.open(path)["output/a"]) == len(a) + 1
    with h5py.File(path, "r") as f:  # a plain, non-SWMR open works again too
        assert "output" in f


KILLED_IN_WINDOW = textwrap.dedent("""
    import os, signal, sys, numpy as np, spikestore
    store = spikestore.Store(sys.argv[1], chunk_bytes=256)
    for i in range(30):
        store.set_step(i)
        store.append("output/a", (np.arange(50) % (i + 2) == 0).astype(np.float32))
    store.flush()
    backend = store._writer.backend   # the writer thread is idle after flush()
    with backend._handle.lock, backend._structure() as f:
        f.create_group("output/never-committed")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_writer_killed_inside_a_structure_window_leaves_a_readable_file(tmp_path, monkeypatch):
    monkeypatch.setattr("spikestore.backends.hdf5._handles.WINDOW_WAIT_S", 0.2)  # where it is read
    path = tmp_path / "window.h5"
    script = tmp_path / "w.py"
    script.write_text(KILLED_IN_WINDOW)
    proc = subprocess.run([sys.executable, str(script), str(path)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert _flags(path) == 0x01  # "open for write", not SWMR: SWMR readers refuse it
    with pytest.raises(OSError):
        h5py.File(path, "r", swmr=True)
    before = path.read_bytes()

    run = spikestore.open(path)  # reads through a recovered view...
    s = run["output/a"]
    assert len(s) == 30
    for i in range(30):
        np.testing.assert_array_equal(s[i], (np.arange(50) % (i + 2) == 0).astype(np.float32))
    run.close()
    assert path.read_bytes() == before  # ...and leaves the file alone

    with spikestore.Store(path, mode="a") as store:
        store.append("output/a", np.ones(50, np.float32))
    assert len(spikestore.open(path)["output/a"]) == 31 and _flags(path) == 0


def test_an_hdf5_stream_written_under_a_long_group_name_by_earlier_versions_still_reads(tmp_path):
    """Before names were bounded, HDF5 (which takes long names) stored a 100-character CJK layer under
    its 900-byte escaped name; moving the group there reproduces such a file."""
    from spikestore import verify
    from spikestore._format.names import stream_node, unbounded_stream_node

    key = "output/" + "層" * 100
    path = tmp_path / "old.h5"
    with spikestore.Store(path) as store:
        store.append(key, np.arange(6.0))
        store.append("output/short", np.ones(2))
    old = unbounded_stream_node(key)
    assert old is not None and old != stream_node(key)
    with h5py.File(path, "r+") as f:
        f.move(stream_node(key), old)
    run = spikestore.open(path)
    assert run.streams == [key, "output/short"]
    np.testing.assert_array_equal(run[key][0], np.arange(6.0))
    assert verify(path) == []
    with pytest.raises(spikestore.FormatError, match="record into a new store"):
        spikestore.Store(path, mode="a")


# -- links that are not hard ------------------------------------------------------------------

def _linked_store(tmp_path: Path, node: str, link: object) -> Path:
    """A closed store of streams ``v/a`` and ``v/b`` whose ``node`` is replaced by ``link``.

    The link's target holds a valid copy of what it replaces (another file written the same
    way, or ``v/b``), so a reader that followed it would read wrong records without an error.
    """
    for name in ("run.h5", "other.h5"):
        with spikestore.Store(tmp_path / name) as store:
            for step in range(3):
                store.append("v/a", np.full(4, step, np.float32) + 0.5, step=step)
                store.append("v/b", np.full(4, -step, np.float32) - 0.5, step=step)
    path = tmp_path / "run.h5"
    with h5py.File(path, "r+") as f:
        del f[node]
        f[node] = link
    return path


@pytest.mark.parametrize("node,link,named", [
    ("v/a", h5py.ExternalLink("other.h5", "/v/a"), r"/v/a: it is an external link to '/v/a' in the file 'other\.h5'"),
    ("v/a", h5py.SoftLink("/v/b"), r"/v/a: it is a soft link to '/v/b'"),
    ("v/a/seg000000", h5py.SoftLink("/v/b/seg000000"), r"/v/a/seg000000: it is a soft link"),
    ("v/a/step", h5py.ExternalLink("other.h5", "/v/a/step"), r"/v/a/step: it is an external link"),
])
def test_a_link_that_is_not_hard_is_damage_never_followed(tmp_path, node, link, named):
    path = _linked_store(tmp_path, node, link)
    run = spikestore.open(path)
    with pytest.raises(DamagedStoreError, match=named):
        stream = run["v/a"]
        stream[:]
        stream.steps  # noqa: B018
    np.testing.assert_array_equal(run["v/b"][:], -np.arange(3, dtype=np.float32)[:, None] - 0.5 + np.zeros(4))
    run.close()
    problems = spikestore.verify(path)
    assert problems and any(re.search(named, p) for p in problems), problems


def test_an_external_link_in_place_of_a_quantity_is_damage(tmp_path):
    path = _linked_store(tmp_path, "v", h5py.ExternalLink("other.h5", "/v"))
    with pytest.raises(DamagedStoreError, match=r"/v: it is an external link"):
        spikestore.open(path)["v/a"][:]
    assert any("external link" in p for p in spikestore.verify(path))
