"""Write path: round trips, modes, metadata, policies (docs/format.md, docs/reliability.md)."""

from __future__ import annotations

import json
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch
from helpers import record_streams, writer_held
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import spikestore
from spikestore import (
    InvalidArgumentError,
    InvalidValueError,
    StoreClosedError,
    StoreExistsError,
    StoreNotFoundError,
    StreamNotFoundError,
)

TORCH_DTYPES = [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float16, torch.bfloat16,
                torch.float32, torch.float64]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(records=record_streams(), chunk_bytes=st.sampled_from([1, 64, 1 << 20]))
def test_any_numpy_records_round_trip(tmp_path_factory, records, chunk_bytes):
    path = tmp_path_factory.mktemp("rt") / "s.zarr"
    with spikestore.Store(path, chunk_bytes=chunk_bytes) as store:
        for i, r in enumerate(records):
            store.set_step(i // 2)
            assert store.append("output/layer", r) == i
    run = spikestore.open(path)
    s = run["output/layer"]
    assert len(s) == len(records)
    for i, r in enumerate(records):
        got = s[i]
        assert got.dtype == r.dtype and got.shape == r.shape
        np.testing.assert_array_equal(got, r)
    np.testing.assert_array_equal(s.steps, np.arange(len(records)) // 2)
    np.testing.assert_array_equal(s.calls, np.arange(len(records)) % 2)
    assert s.steps.dtype == np.int64


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(TORCH_DTYPES), binary=st.booleans(),
       shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7), seed=st.integers(0, 99))
def test_torch_tensors_round_trip_with_dtype(tmp_path_factory, dtype, binary, shape, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=g)
    t = (base < 0.3).to(dtype) if binary or dtype == torch.bool else (base * 100).to(dtype)
    path = tmp_path_factory.mktemp("tt") / "s.zarr"
    with spikestore.Store(path) as store:
        store.append("v/0", t)
        store.append("v/0", t)
    s = spikestore.open(path)["v/0"]
    back = s.tensor(1)
    assert back.dtype == t.dtype and back.shape == t.shape
    assert torch.equal(back, t)
    if dtype == torch.bfloat16:
        assert s[0].dtype == np.dtype(ml_dtypes.bfloat16)


def test_binary_records_are_bit_packed_and_others_raw(tmp_path):
    path = tmp_path / "s.zarr"
    with spikestore.Store(path) as store:
        store.append("output/a", torch.ones(4, 16))
        store.append("v/a", torch.full((4, 16), 0.5))
    run = spikestore.open(path)
    (bits,), (raw,) = run["output/a"].segments, run["v/a"].segments
    assert bits.encoding == "bits" and bits.stored_shape == (4, 2) and bits.stored_dtype == np.uint8
    assert raw.encoding == "raw" and raw.stored_shape == (4, 16)


def test_many_records_per_chunk_and_segments_on_shape_change(tmp_path):
    path = tmp_path / "s.zarr"
    with spikestore.Store(path, chunk_bytes=4096) as store:
        for step in range(100):
            store.set_step(step)
            store.append("output/1", torch.ones(3 if step % 10 == 9 else 4, 64))
    s = spikestore.open(path)["output/1"]
    assert len(s) == 100 and len(s.segments) == 20
    assert s.segments[0].chunk_records == 4096 // (4 * 8)
    assert s[9].shape == (3, 64) and s[10].shape == (4, 64)
    assert s[0:9].shape == (9, 4, 64)
    with pytest.raises(InvalidArgumentError, match="different shapes"):
        s[8:11]


def test_plain_zarr_reads_the_same_bits(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    x = (torch.rand(5, 3, 21) < 0.2).float()
    with spikestore.Store(path) as store:
        for r in x:
            store.append("output/conv", r)
    z = zarr.open_group(path, mode="r")
    doc = z.attrs["spikestore"]
    assert doc["format_version"] == 2 and doc["streams"] == ["output/conv"]
    arr = z["output/conv/seg000000"][:]
    np.testing.assert_array_equal(np.unpackbits(arr, axis=-1, count=21, bitorder="little"), x.numpy())
    np.testing.assert_array_equal(z["output/conv/step"][:], np.zeros(5))


def test_mode_w_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "s.zarr"
    with spikestore.Store(path) as store:
        store.append("output/1", np.ones(3))
    with pytest.raises(StoreExistsError, match="overwrite=True"):
        spikestore.Store(path, mode="w")
    with spikestore.Store(path, mode="w", overwrite=True) as store:
        store.append("output/2", np.ones(3))
    assert spikestore.open(path).streams == ["output/2"]


def test_mode_a_appends_and_steps_continue(tmp_path):
    path = tmp_path / "s.zarr"
    with spikestore.Store(path, metadata={"lr": 0.1}) as store:
        for step in range(3):
            store.set_step(step)
            store.append("output/1", np.ones(9, dtype=np.float32))
    with spikestore.Store(path, mode="a", metadata={"resumed": True}) as store:
        assert store.step == 3
        store.append("output/1", np.zeros(9, dtype=np.float32))
        store.append("output/2", np.zeros(2))
    run = spikestore.open(path)
    s = run["output/1"]
    assert len(s) == 4 and list(s.steps) == [0, 1, 2, 3]
    np.testing.assert_array_equal(s[3], np.zeros(9, np.float32))
    np.testing.assert_array_equal(s[0], np.ones(9, np.float32))
    assert run.metadata == {"lr": 0.1, "resumed": True}
    assert run.streams == ["output/1", "output/2"]


def test_mode_a_needs_an_existing_store_and_reading_goes_through_open(tmp_path):
    with pytest.raises(StoreNotFoundError):
        spikestore.Store(tmp_path / "none.zarr", mode="a")
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/1", np.ones(3))
    with pytest.raises(InvalidArgumentError, match=r"spikestore\.open"):
        spikestore.Store(tmp_path / "s.zarr", mode="r")
    assert len(spikestore.open(tmp_path / "s.zarr")["output/1"]) == 1  # untouched by the refusal
    with pytest.raises(InvalidArgumentError):
        spikestore.Store(tmp_path / "x.zarr", mode="x")
    assert not (tmp_path / "x.zarr").exists()


def test_root_document_records_metadata_versions_and_status(tmp_path):
    path = tmp_path / "s.zarr"
    store = spikestore.Store(path, metadata={"model": "cnn", "T": 8})
    live = spikestore.open(path)
    assert live.writer["status"] == "open"
    store.close()
    store.close()  # idempotent
    root = json.loads((path / "zarr.json").read_text())["attributes"]["spikestore"]
    assert root["metadata"] == {"model": "cnn", "T": 8}
    assert root["writer"]["status"] == "closed" and root["writer"]["dropped"] == 0
    assert root["versions"]["numpy"] == np.__version__
    assert root["versions"]["numba"] == __import__("numba").__version__  # its kernels write the packed bits
    with pytest.raises(InvalidArgumentError, match="JSON"):
        spikestore.Store(tmp_path / "m.zarr", metadata={"f": object()})


def test_closed_store_refuses_records(tmp_path):
    store = spikestore.Store(tmp_path / "s.zarr")
    store.close()
    with pytest.raises(StoreClosedError):
        store.append("output/1", np.ones(3))


@pytest.mark.parametrize("value", ["text", object(), np.array(["a"]), torch.zeros(2).to_sparse(), None])
def test_unrecordable_values_raise_a_clear_error(tmp_path, value):
    with spikestore.Store(tmp_path / "s.zarr") as store, pytest.raises(InvalidValueError, match="output/1"):
        store.append("output/1", value)


def test_bad_arguments(tmp_path):
    with spikestore.Store(tmp_path / "s.zarr") as store:
        with pytest.raises(InvalidArgumentError):
            store.set_step(-1)
        with pytest.raises(InvalidArgumentError):
            store.append("no-slash", np.ones(1))
        with pytest.raises(InvalidArgumentError):
            store.append("output/1", np.ones(1), encoding="gzip")
    with pytest.raises(InvalidArgumentError):
        spikestore.Store(tmp_path / "t.zarr", on_full="explode")


@pytest.mark.parametrize("level", [0, 10, -1, 2.5, True, "1"])
def test_a_compression_level_the_codecs_refuse_is_refused_when_the_store_opens(tmp_path, level):
    # 10 would stop the writer at blosc's first chunk; 2.5 or True would be written into documents that fail their
    # schema on reading. Refused before anything is created.
    with pytest.raises(InvalidArgumentError, match="compression_level must be an integer from 1 to 9"):
        spikestore.Store(tmp_path / "s.zarr", compression_level=level)
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("level", [1, 9, np.int64(4)])
def test_every_compression_level_in_range_writes_a_readable_store(tmp_path, level):
    voltages = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32)
    with spikestore.Store(tmp_path / "s.zarr", compression_level=level) as store:
        store.append("v/1", voltages)
        store.append("output/1", voltages > 0.5)
    with spikestore.open(tmp_path / "s.zarr") as run:
        np.testing.assert_array_equal(run["v/1"][0], voltages)
        np.testing.assert_array_equal(run["output/1"][0], voltages > 0.5)


def test_unknown_stream_lists_the_known_ones(tmp_path):
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/1", np.ones(1))
    with pytest.raises(StreamNotFoundError, match="output/1"):
        spikestore.open(tmp_path / "s.zarr")["output/9"]
    with pytest.raises(StoreNotFoundError):
        spikestore.open(tmp_path / "nothing")


def test_copy_true_protects_against_later_in_place_changes(tmp_path):
    t = torch.rand(100)
    ref = t.clone()
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("v/1", t, copy=True)
        t.add_(1.0)
    np.testing.assert_array_equal(spikestore.open(tmp_path / "s.zarr")["v/1"][0], ref.numpy())


def test_forced_encodings(tmp_path):
    with spikestore.Store(tmp_path / "s.zarr") as store:
        store.append("output/1", torch.ones(16), encoding="raw")
    assert spikestore.open(tmp_path / "s.zarr")["output/1"].segments[0].encoding == "raw"
    store = spikestore.Store(tmp_path / "t.zarr")
    store.append("output/1", torch.full((16,), 0.5), encoding="bits")
    with pytest.raises(spikestore.WriterError) as info:
        store.close()
    assert isinstance(info.value.__cause__, InvalidValueError)


def test_drop_policy_counts_and_warns(tmp_path):
    path = tmp_path / "s.zarr"
    store = spikestore.Store(path, max_pending_bytes=1000, on_full="drop")
    with writer_held(store), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [store.append("v/1", np.zeros(100)) for _ in range(5)]
    assert results[0] == 0 and results[1:] == [None] * 4
    assert store.dropped == 4
    assert sum("dropped" in str(w.message) for w in caught) == 1
    store.close()
    assert store.dropped == 4  # a property, readable after close
    run = spikestore.open(path)
    assert run.writer["dropped"] == 4 and len(run["v/1"]) == 1


def test_flush_makes_records_visible_to_a_live_reader(tmp_path):
    path = tmp_path / "s.zarr"
    store = spikestore.Store(path, flush_interval=3600)
    store.append("output/1", torch.ones(10))
    store.flush()
    run = spikestore.open(path)
    assert len(run["output/1"]) == 1
    store.append("output/1", torch.zeros(10))
    store.flush()
    assert len(run["output/1"]) == 1  # until refreshed
    run.refresh()
    assert len(run["output/1"]) == 2
    np.testing.assert_array_equal(run["output/1"][1], np.zeros(10, np.float32))
    store.close()


def test_auto_flush_interval_commits_without_flush(tmp_path):
    import time

    path = tmp_path / "s.zarr"
    store = spikestore.Store(path, flush_interval=0.2)
    store.append("output/1", torch.ones(10))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run = spikestore.open(path)
        if "output/1" in run and len(run["output/1"]) == 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail("auto-flush did not commit the record")
    store.close()


@pytest.mark.slow
def test_a_store_left_open_is_closed_at_exit(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "exit.zarr"
    code = (f"import spikestore, numpy as np\n"
            f"s = spikestore.Store({str(path)!r}, flush_interval=3600)\n"
            f"for i in range(10): s.append('output/1', np.ones(4))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "never awaited" not in out.stderr, out.stderr
    run = spikestore.open(path)
    assert run.writer["status"] == "closed" and len(run["output/1"]) == 10


def test_durable_mode_fsyncs_and_round_trips(tmp_path, monkeypatch):
    import os as _os

    synced = []
    real = _os.fsync
    monkeypatch.setattr(_os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    path = tmp_path / "d.zarr"
    with spikestore.Store(path, durable=True) as store:
        store.append("output/1", torch.ones(3, 9))
        store.flush()
        assert synced, "durable=True must fsync at commit"
    np.testing.assert_array_equal(spikestore.open(path)["output/1"][0], np.ones((3, 9), np.float32))


def test_zero_d_raw_records_keep_their_shape_on_disk(tmp_path):
    import zarr

    with spikestore.Store(tmp_path / "z.zarr") as store:
        store.append("loss/net", 0.25)
    seg = spikestore.open(tmp_path / "z.zarr")["loss/net"].segments[0]
    assert seg.stored_shape == () and zarr.open_array(tmp_path / "z.zarr/loss/net/seg000000").shape == (1,)


def test_lossy_precision_is_opt_in_and_recorded(tmp_path):
    import numcodecs

    x = torch.randn(64, 33)
    path = tmp_path / "p.zarr"
    with spikestore.Store(path) as store:
        store.append("v/exact", x)
        store.append("v/bf16", x, precision="bf16")
        store.append("v/keep", x, precision="keepbits:7")
        store.append("output/spk", (x > 0).float(), precision="bf16")  # spikes stay bits, exact
        with pytest.raises(InvalidArgumentError):
            store.append("v/bad", x, precision="fp8")
    run = spikestore.open(path)
    np.testing.assert_array_equal(run["v/exact"][0], x.numpy())
    assert run["v/exact"].segments[0].doc["precision"] is None
    bf = run["v/bf16"]
    assert bf.segments[0].doc["precision"] == "bf16" and bf.segments[0].stored_dtype == np.uint16
    assert bf[0].dtype == np.float32
    np.testing.assert_array_equal(bf[0], x.to(torch.bfloat16).float().numpy())  # torch's RNE rounding
    keep = run["v/keep"]
    assert keep.segments[0].doc["precision"] == "keepbits:7"
    want = numcodecs.BitRound(keepbits=7).encode(x.numpy()).view(np.float32).reshape(64, 33)
    assert keep[0].dtype == np.float32 and keep.segments[0].doc["stored_dtype"] == "float32"
    np.testing.assert_array_equal(keep[0], want)
    assert run["output/spk"].segments[0].encoding == "bits"
    np.testing.assert_array_equal(run["output/spk"][0], (x > 0).float().numpy())


def test_lossy_precision_on_integers_is_refused(tmp_path):
    with spikestore.Store(tmp_path / "i.zarr") as store, pytest.raises(InvalidValueError, match="v/int"):
        store.append("v/int", np.arange(10) * 3, precision="bf16")


def test_a_segment_name_left_unusable_by_a_crash_is_skipped(tmp_path, monkeypatch):
    """HDF5 may be unable to delete an array a SIGKILL cut short: the writer takes the next name."""
    from spikestore.backends._zarr import ZarrBackend
    from spikestore.errors import ArrayNameTakenError

    orig = ZarrBackend.create_array

    def create_array(self, node, spec):
        if node.endswith("/seg000001"):
            raise ArrayNameTakenError(node)
        orig(self, node, spec)

    monkeypatch.setattr(ZarrBackend, "create_array", create_array)
    records = [np.zeros((2, 3), np.float32), np.ones((4,), np.float32), np.full((1,), 2.5, np.float32)]
    with spikestore.Store(tmp_path / "s.zarr") as store:
        for r in records:
            store.append("v/x", r)
    s = spikestore.open(tmp_path / "s.zarr")["v/x"]
    assert [seg.doc["array"] for seg in s.segments] == ["seg000000", "seg000002", "seg000003"]
    for i, r in enumerate(records):
        np.testing.assert_array_equal(s[i], r)


def test_binary_float32_is_packed_in_the_hook(tmp_path):
    """What is stored is what append saw, even if the tensor changes right after."""
    x = (torch.rand(3, 28) < 0.3).float()
    store = spikestore.Store(tmp_path / "s.zarr")
    want = x.clone()
    with writer_held(store):
        store.append("output/1", x)
        x.fill_(1.0)  # in place, before the writer has looked at it
    store.close()
    np.testing.assert_array_equal(spikestore.open(tmp_path / "s.zarr")["output/1"][0], want.numpy())


def test_a_packed_record_counts_its_float_size_against_the_queue_bound(tmp_path):
    """Packed in the hook to 1/32 of its bytes, a spike record still counts 4 bytes a value while it
    waits, so the bound also bounds how far the writer falls behind."""
    x = (torch.rand(3, 28) < 0.3).float()  # 336 bytes as float32, 12 packed
    store = spikestore.Store(tmp_path / "s.zarr", max_pending_bytes=500, on_full="drop")
    with writer_held(store), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the queue-full warning
        assert store.append("output/1", x) == 0
        assert store.append("output/1", x) is None  # 672 > 500: counted at the float size
    assert store.dropped == 1
    store.close()


def test_the_public_surface_is_what_a_user_calls(tmp_path):
    """Monitor plumbing (claiming streams, automatic steps) is not part of Store; its
    properties cannot be set."""
    public = {name for name in dir(spikestore.Store) if not name.startswith("_")}
    assert public == {"append", "set_step", "set_stream_info", "step", "flush", "close", "path", "mode",
                      "closed", "dropped", "pinned_pool", "trigger"}
    with spikestore.Store(tmp_path / "s.zarr") as store:
        for name in ("path", "mode", "closed", "dropped", "step"):
            with pytest.raises(AttributeError):
                setattr(store, name, None)


def test_calls_count_within_a_step_and_restart_at_a_new_one(tmp_path):
    """``call`` numbers the records of one stream within one step, whatever order the steps come in;
    a record the full queue refused keeps its call (a gap), and takes no index."""
    with spikestore.Store(tmp_path / "s.zarr") as store:
        got = []
        for step in (0, 0, 0, 1, 1, 0):
            store.set_step(step)
            got.append(store.append("v/1", np.float32(step)))
        got.append(store.append("v/1", np.float32(9), step=0))  # same step as the last: call 1
        store.append("v/2", np.float32(1), step=5)
    assert got == list(range(7))
    with spikestore.open(tmp_path / "s.zarr") as run:
        assert run["v/1"].steps.tolist() == [0, 0, 0, 1, 1, 0, 0]
        assert run["v/1"].calls.tolist() == [0, 1, 2, 0, 1, 0, 1]
        assert run["v/2"].calls.tolist() == [0]
