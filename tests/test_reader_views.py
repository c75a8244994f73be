"""Every read path of a Run/Stream returns exactly what was written (each backend)."""

from __future__ import annotations

import pickle
import threading
import time

import ml_dtypes
import numpy as np
import pytest
import torch

import spikestore
from spikestore import InvalidArgumentError

M_SEL = {"every": 1, "start": None, "stop": None, "batch": None, "neurons": None,
         "step_mode": "m", "batch_axis": 1}
S_SEL = dict(M_SEL, step_mode="s", batch_axis=0)


def write_mixed(path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """A store with every kind of stream; returns {key: [(step, value), ...]} as written."""
    rng = np.random.default_rng(0)
    written: dict[str, list[tuple[int, np.ndarray]]] = {}

    def add(store, key, step, value):
        store.append(key, value)
        written.setdefault(key, []).append((step, np.asarray(value)))

    with spikestore.Store(path, mode="w", chunk_bytes=96, metadata={"lr": 0.1}) as store:
        store.set_stream_info("output/fc", selection=M_SEL)
        store.set_stream_info("v_seq/fc", selection=M_SEL)
        store.set_stream_info("output/s", selection=S_SEL)
        for step in range(23):
            store.set_step(step)
            batch = 3 if step < 20 else 2           # a smaller last batch: a second segment
            add(store, "output/fc", step, (rng.random((4, batch, 10)) < 0.3).astype(np.float32))
            add(store, "v_seq/fc", step, rng.standard_normal((4, batch, 10)).astype(np.float32))
            for _t in range(3):                      # single-step mode: one record per time step
                add(store, "output/s", step, (rng.random((batch, 6)) < 0.4).astype(np.float32))
            add(store, "grad_input/fc", step, np.float32(rng.random()))
            add(store, "x/int16", step, rng.integers(-300, 300, (5,), dtype=np.int16))
            add(store, "x/bool", step, rng.random((2, 9)) < 0.5)
            bf = torch.from_numpy(rng.standard_normal(7).astype(np.float32)).bfloat16()
            bf = bf if step % 2 else (bf > 0).bfloat16()   # binary records are bit-packed
            store.append("x/bf16", bf)
            written.setdefault("x/bf16", []).append((step, bf.view(torch.int16).numpy().view(ml_dtypes.bfloat16)))
    return written


@pytest.fixture
def mixed(store_path):
    written = write_mixed(store_path)
    run = spikestore.open(store_path)
    yield run, written
    run.close()


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    np.testing.assert_array_equal(a.view(np.uint16) if a.dtype == ml_dtypes.bfloat16 else a,
                                  b.view(np.uint16) if b.dtype == ml_dtypes.bfloat16 else b)


def test_run_lists_streams_layers_quantities_metadata(mixed):
    run, written = mixed
    assert run.streams == list(written)
    assert run.quantities == ["output", "v_seq", "grad_input", "x"]
    assert run.layers == ["fc", "s", "int16", "bool", "bf16"]
    assert run.metadata == {"lr": 0.1}
    assert run["output/fc"].key == "output/fc" and "output/fc" in run
    with pytest.raises(spikestore.StreamNotFoundError, match="streams are"):
        run["output/nope"]


def test_every_record_by_position(mixed):
    run, written = mixed
    for key, recs in written.items():
        s = run[key]
        assert len(s) == len(recs)
        for i, (_, value) in enumerate(recs):
            _same(s[i], value)
            _same(s[i - len(recs)], value)
        _same(s.steps, np.array([st for st, _ in recs], np.int64))


def test_slices_index_arrays_masks_and_inner_indexing(mixed):
    run, written = mixed
    s = run["v_seq/fc"]
    ref = np.stack([v for _, v in written["v_seq/fc"][:20]])   # first segment: batch 3
    _same(s[2:17:3], ref[2:17:3])
    _same(s[:20], ref)
    _same(s[[7, 0, 19, 7, -4 - 3]], ref[[7, 0, 19, 7, 16]])
    _same(s[np.array([5, 3], dtype=np.uint8)], ref[[5, 3]])
    mask = np.zeros(len(s), bool)
    mask[[1, 4, 9]] = True
    _same(s[mask], ref[[1, 4, 9]])
    _same(s[5, 2, :, 3], ref[5, 2, :, 3])
    _same(s[1:9:2, 0, 1], ref[1:9:2, 0, 1])
    _same(s[20:], np.stack([v for _, v in written["v_seq/fc"][20:]]))
    assert s[30:].shape == (0, 4, 3, 10)
    with pytest.raises(InvalidArgumentError, match="span segments"):
        s[18:22]
    with pytest.raises(IndexError):
        s[[0, 23]]
    with pytest.raises(IndexError):
        s[-24]


def test_iteration_and_bounded_chunks(mixed):
    run, written = mixed
    for key, recs in written.items():
        s = run[key]
        got = list(s)
        assert len(got) == len(recs)
        for a, (_, b) in zip(got, recs, strict=True):
            _same(a, b)
        chunks = list(s.iter_chunks(max_records=2))
        assert all(c.stop - c.start <= 2 and len(c.values) == c.stop - c.start for c in chunks)
        assert [c.start for c in chunks] == sorted(c.start for c in chunks)
        assert sum(len(c.values) for c in chunks) == len(recs)
        for c in chunks:
            _same(c.steps, s.steps[c.start:c.stop])
            for j, v in enumerate(c.values):
                _same(v, recs[c.start + j][1])
    s = run["output/s"]
    part = list(s.iter_chunks(5, 11))
    assert part[0].start == 5 and part[-1].stop == 11


def test_values_read_are_copies_that_do_not_alter_the_store(mixed):
    run, written = mixed
    s = run["v_seq/fc"]
    a = s[3]
    a[...] = 99
    _same(s[3], written["v_seq/fc"][3][1])
    assert s[3].flags.writeable


def test_sel_by_step_and_call(mixed):
    run, written = mixed
    s = run["v_seq/fc"]
    _same(s.sel(step=4), written["v_seq/fc"][4][1])
    _same(s.sel(step=[4, 2]), np.stack([written["v_seq/fc"][i][1] for i in (2, 4)]))
    _same(s.sel(step=slice(3, 6)), np.stack([written["v_seq/fc"][i][1] for i in range(3, 7)]))
    single = run["output/s"]
    _same(single.sel(step=5, call=2), written["output/s"][5 * 3 + 2][1])
    _same(single.sel(step=[5]), np.stack([v for _, v in written["output/s"][15:18]]))
    _same(single.sel(step=[5, 6], call=0), np.stack([written["output/s"][15][1], written["output/s"][18][1]]))
    with pytest.raises(InvalidArgumentError, match="3 records at step 5.*call="):
        single.sel(step=5)
    with pytest.raises(InvalidArgumentError, match="no record at step 99"):
        s.sel(step=99)


def test_tensor_restores_dtype(mixed):
    run, written = mixed
    for key in ("x/bf16", "x/int16", "x/bool", "output/fc"):
        for i in (0, 1, -1):
            t = run[key].tensor(i)
            ref = written[key][i][1]
            if key == "x/bf16":
                assert t.dtype == torch.bfloat16
                np.testing.assert_array_equal(t.float().numpy(), ref.astype(np.float32))
            else:
                np.testing.assert_array_equal(t.numpy(), ref)


def test_to_dask_equals_written_and_reads_nothing_until_computed(mixed, monkeypatch):
    run, written = mixed
    reads = []
    backend = type(run._backend)
    real = backend.read_chunk
    monkeypatch.setattr(backend, "read_chunk", lambda self, node, c: reads.append((node, c)) or real(self, node, c))
    run.refresh()  # empty the chunk cache
    s = run["output/fc"]
    arrays = s.to_dask()
    assert isinstance(arrays, list) and len(arrays) == 2 and reads == []
    seg = s.segments[0]
    assert arrays[0].chunks[0] == tuple(min(seg.chunk_records, seg.count - k) for k in
                                         range(0, seg.count, seg.chunk_records))
    _same(arrays[0].compute(), np.stack([v for _, v in written["output/fc"][:20]]))
    _same(arrays[1].compute(), np.stack([v for _, v in written["output/fc"][20:]]))
    assert reads
    one = run["x/int16"].to_dask()
    _same(one[7].compute(), written["x/int16"][7][1])
    assert one.sum().compute() == sum(int(v.sum()) for _, v in written["x/int16"])


def test_to_dask_under_the_process_scheduler(mixed):
    run, written = mixed
    arr = run["x/int16"].to_dask()
    _same(arr.compute(scheduler="processes", num_workers=2), np.stack([v for _, v in written["x/int16"]]))
    s2 = pickle.loads(pickle.dumps(run["v_seq/fc"]))
    _same(s2[4], written["v_seq/fc"][4][1])


def test_summary_html(mixed):
    run, _ = mixed
    html = run._repr_html_()
    for word in ("output/fc", "v_seq/fc", "records", "on disk", "data vs float32", "bits", "raw", "0..22",
                 "4&times;3&times;10"):
        assert word in html
    assert html.count("<tr>") == len(run.streams) + 2  # header, streams, total


def _expected_live(i: int) -> np.ndarray:
    return ((np.arange(4 * 3 * 16).reshape(4, 3, 16) + i) % 5 == 0).astype(np.float32)


def test_live_reading_while_a_writer_thread_appends(store_path):
    n = 400
    store = spikestore.Store(store_path, mode="w", chunk_bytes=200, flush_interval=0.05)
    store.set_stream_info("output/live", selection=M_SEL)
    store.flush()
    done = threading.Event()
    failure: list[BaseException] = []

    def produce():
        try:
            for i in range(n):
                store.set_step(i)
                store.append("output/live", _expected_live(i))
                store.append("v_seq/live", np.full(3, i, np.float64))
                if i % 37 == 0:
                    store.flush()
                time.sleep(0.0005)
            store.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    run = spikestore.open(store_path)
    seen, last = [], 0
    while True:
        finished = done.is_set()
        run.refresh()
        if "output/live" in run:
            s, v = run["output/live"], run["v_seq/live"] if "v_seq/live" in run else None
            k = len(s)
            assert k >= last  # committed counts only grow
            last = k
            seen.append(k)
            if k:
                for i in {0, k // 2, k - 1}:
                    np.testing.assert_array_equal(s[i], _expected_live(i))
                np.testing.assert_array_equal(s.steps, np.arange(k))
                lazy = s.to_dask()
                np.testing.assert_array_equal(lazy[-1].compute(), _expected_live(k - 1))
            if v is not None and len(v):
                np.testing.assert_array_equal(v[:], np.repeat(np.arange(len(v)), 3).reshape(-1, 3))
        if finished:
            break
        time.sleep(0.01)
    thread.join()
    assert not failure, failure
    assert last == n and len(set(seen)) > 2, seen  # it saw the stream grow, then all of it
    assert run.writer["status"] == "closed"
    run.close()
