"""Every read path of a Run/Stream returns exactly what was written (each backend)."""

from __future__ import annotations

import pickle
import queue
import threading
import time

import numpy as np
import pytest
import torch
from helpers import M_SEL, count_chunk_reads, same, write_mixed

import spikestore
from spikestore import InvalidArgumentError


@pytest.fixture
def mixed(store_path):
    written = write_mixed(store_path)
    run = spikestore.open(store_path)
    yield run, written
    run.close()


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
            same(s[i], value)
            same(s[i - len(recs)], value)
        same(s.steps, np.array([st for st, _ in recs], np.int64))


def test_slices_index_arrays_masks_and_inner_indexing(mixed):
    run, written = mixed
    s = run["v_seq/fc"]
    ref = np.stack([v for _, v in written["v_seq/fc"][:20]])   # first segment: batch 3
    same(s[2:17:3], ref[2:17:3])
    same(s[:20], ref)
    same(s[[7, 0, 19, 7, -4 - 3]], ref[[7, 0, 19, 7, 16]])
    same(s[np.array([5, 3], dtype=np.uint8)], ref[[5, 3]])
    mask = np.zeros(len(s), bool)
    mask[[1, 4, 9]] = True
    same(s[mask], ref[[1, 4, 9]])
    same(s[5, 2, :, 3], ref[5, 2, :, 3])
    same(s[1:9:2, 0, 1], ref[1:9:2, 0, 1])
    same(s[20:], np.stack([v for _, v in written["v_seq/fc"][20:]]))
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
            same(a, b)
        chunks = list(s.iter_chunks(max_records=2))
        assert all(c.stop - c.start <= 2 and len(c.values) == c.stop - c.start for c in chunks)
        assert [c.start for c in chunks] == sorted(c.start for c in chunks)
        assert sum(len(c.values) for c in chunks) == len(recs)
        for c in chunks:
            same(c.steps, s.steps[c.start:c.stop])
            for j, v in enumerate(c.values):
                same(v, recs[c.start + j][1])
    s = run["output/s"]
    part = list(s.iter_chunks(5, 11))
    assert part[0].start == 5 and part[-1].stop == 11
    assert next(c.start for c in s.iter_chunks(-4)) == len(s) - 4
    with pytest.raises(InvalidArgumentError, match="max_records must be >= 1"):
        list(s.iter_chunks(max_records=0))


def test_values_read_are_copies_that_do_not_alter_the_store(mixed):
    run, written = mixed
    s = run["v_seq/fc"]
    a = s[3]
    a[...] = 99
    same(s[3], written["v_seq/fc"][3][1])
    assert s[3].flags.writeable


def test_sel_by_step_and_call(mixed):
    run, written = mixed
    s = run["v_seq/fc"]
    same(s.sel(step=4), written["v_seq/fc"][4][1])
    same(s.sel(step=[4, 2]), np.stack([written["v_seq/fc"][i][1] for i in (2, 4)]))
    same(s.sel(step=slice(3, 6)), np.stack([written["v_seq/fc"][i][1] for i in range(3, 7)]))
    single = run["output/s"]
    same(single.sel(step=5, call=2), written["output/s"][5 * 3 + 2][1])
    same(single.sel(step=[5]), np.stack([v for _, v in written["output/s"][15:18]]))
    same(single.sel(step=[5, 6], call=0), np.stack([written["output/s"][15][1], written["output/s"][18][1]]))
    with pytest.raises(InvalidArgumentError, match=r"3 records at step 5.*call="):
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
    reads = count_chunk_reads(monkeypatch, run.path)
    run.refresh()  # empty the chunk cache
    s = run["output/fc"]
    arr = s.to_dask()  # batch 3 then 2: one array, padded along the batch axis
    assert arr.shape == (23, 4, 3, 10) and reads == []
    seg = s.segments[0]
    first = tuple(min(seg.chunk_records, seg.count - k) for k in range(0, seg.count, seg.chunk_records))
    assert arr.chunks[0][:len(first)] == first
    assert arr.chunks[0] == tuple(len(c.values) for c in s.iter_chunks())  # one task per stored chunk
    values = arr.compute()
    same(values[:20], np.stack([v for _, v in written["output/fc"][:20]]))
    same(values[20:, :, :2], np.stack([v for _, v in written["output/fc"][20:]]))
    assert (values[20:, :, 2] == 0).all()
    same(s.to_dask(segment=1).compute(), np.stack([v for _, v in written["output/fc"][20:]]))
    assert reads
    one = run["x/int16"].to_dask()
    same(one[7].compute(), written["x/int16"][7][1])
    assert one.sum().compute() == sum(int(v.sum()) for _, v in written["x/int16"])


@pytest.mark.slow  # spawns processes
def test_to_dask_under_the_process_scheduler(mixed):
    run, written = mixed
    arr = run["x/int16"].to_dask()
    same(arr.compute(scheduler="processes", num_workers=2), np.stack([v for _, v in written["x/int16"]]))
    padded = run["v_seq/fc"].to_dask()  # padded tasks pickle too
    same(padded.compute(scheduler="processes", num_workers=2), padded.compute(scheduler="sync"))
    s2 = pickle.loads(pickle.dumps(run["v_seq/fc"]))
    same(s2[4], written["v_seq/fc"][4][1])


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
    """A reader polls while a thread appends; at every flush the writer waits until the reader has
    seen that many records, so the reader sees the stream grow (no sleeps: hand-offs with deadlines)."""
    n, every, wait_s = 400, 37, 60.0
    store = spikestore.Store(store_path, mode="w", chunk_bytes=200, flush_interval=0.05)
    store.set_stream_info("output/live", selection=M_SEL)
    store.flush()
    flushed: queue.Queue[int] = queue.Queue()  # record counts committed by a flush, in order
    seen: queue.Queue[int] = queue.Queue()     # the reader's answer: it saw at least that many
    done = threading.Event()
    failure: list[BaseException] = []

    def produce():
        try:
            for i in range(n):
                store.set_step(i)
                store.append("output/live", _expected_live(i))
                store.append("v_seq/live", np.full(3, i, np.float64))
                if i % every == 0:
                    store.flush()
                    flushed.put(i + 1)
                    seen.get(timeout=wait_s)  # queue.Empty (a failure) if the reader never catches up
            store.close()
        except BaseException as exc:  # noqa: BLE001  (any failure of the writer thread is reported by the main thread)
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    run = spikestore.open(store_path)
    counts, last, target = [], 0, None
    deadline = time.monotonic() + 4 * wait_s
    while True:
        assert time.monotonic() < deadline, f"the reader saw {last} of {n} records"
        finished = done.is_set()
        run.refresh()
        if "output/live" in run:
            s, v = run["output/live"], (run["v_seq/live"] if "v_seq/live" in run else None)  # noqa: SIM401 (Run has no get)
            k = len(s)
            assert k >= last  # committed counts only grow
            last = k
            counts.append(k)
            if k:
                for i in {0, k // 2, k - 1}:
                    np.testing.assert_array_equal(s[i], _expected_live(i))
                np.testing.assert_array_equal(s.steps, np.arange(k))
                lazy = s.to_dask()
                np.testing.assert_array_equal(lazy[-1].compute(), _expected_live(k - 1))
            if v is not None and len(v):
                np.testing.assert_array_equal(v[:], np.repeat(np.arange(len(v)), 3).reshape(-1, 3))
        if target is None and not flushed.empty():
            target = flushed.get()
        if target is not None and last >= target:
            seen.put(last)
            target = None
        if finished:
            break
    thread.join(timeout=wait_s)
    assert not thread.is_alive() and not failure, failure
    assert last == n and len(set(counts)) > 2, counts  # it saw the stream grow, then all of it
    assert run.writer["status"] == "closed"
    run.close()
