"""The CUDA capture path's logic that needs no device: the pinned pool's
accounting and bound, block and drop when it is full, the event hand-off to the
writer (a stand-in event), the non-binary fallback, and on-device packing's bytes.

Everything runs on CPU tensors: the pool's allocator is injected, an event is
a stand-in whose ``synchronize()`` is when the "device copy" lands, and
:func:`pack_torch_flagged` runs on the CPU with the same code as on CUDA.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable

import numpy as np
import pytest
import torch
from parity import data_files, mixed_records, write_records

import spikestore
from spikestore import InvalidValueError
from spikestore._format import dtypes
from spikestore._write.capture import Frame, prepare
from spikestore._write.cuda import CudaCapture, InFlight
from spikestore._write.pinned import PinnedPool, size_class
from spikestore.codecs._packing import Packer, pack_float32, pack_torch_flagged, packed_nbytes

ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.bool, torch.uint8,
              torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32, torch.uint64]


def plain(n: int) -> torch.Tensor:
    """The injected allocator: a plain CPU buffer, filled with garbage as fresh memory may be."""
    return torch.full((n,), 0xAA, dtype=torch.uint8)


# -- the pool -----------------------------------------------------------------------------

def test_size_classes_are_powers_of_two_from_512():
    assert [size_class(n) for n in (0, 1, 512, 513, 1000, 4096, 4097)] == [512, 512, 512, 1024, 1024, 4096, 8192]


def test_buffers_are_reused_and_counted():
    pool = PinnedPool(1 << 20, allocate=plain)
    a = pool.acquire(3000)
    assert a.size == 4096 and a.buffer.numel() == 4096
    assert (pool.allocations, pool.reuses, pool.allocated_bytes, pool.in_use_bytes) == (1, 0, 4096, 4096)
    buf = a.buffer
    a.release()
    a.release()  # idempotent
    assert pool.in_use_bytes == 0 and pool.allocated_bytes == 4096
    b = pool.acquire(2100)  # same class: the same buffer again, no allocation
    assert b.buffer is buf
    assert (pool.allocations, pool.reuses) == (1, 1)
    for _ in range(100):  # a steady stream of records allocates nothing more
        c = pool.acquire(5000)
        c.release()
    assert (pool.allocations, pool.reuses) == (2, 100)
    b.release()
    assert pool.stats() == {"allocated_bytes": 4096 + 8192, "in_use_bytes": 0, "allocations": 2,
                            "reuses": 100, "evictions": 0, "refused": 0}


def test_allocation_never_passes_the_bound_free_buffers_of_other_sizes_are_evicted():
    pool = PinnedPool(16384, allocate=plain)
    small = [pool.acquire(4096) for _ in range(3)]
    for lease in small:
        lease.release()
    assert pool.allocated_bytes == 12288
    big = pool.acquire(8192)  # 12288 + 8192 > 16384: one free 4096 buffer goes
    assert pool.evictions == 1 and pool.allocated_bytes == 8192 + 8192 == pool.max_bytes
    big.release()
    seen = []
    for n in (100, 9000, 3000, 16384, 700, 5000):
        lease = pool.acquire(n)
        seen.append(pool.allocated_bytes)
        lease.release()
    assert max(seen) <= pool.max_bytes


def test_one_oversized_request_is_served_alone_and_not_kept():
    pool = PinnedPool(4096, allocate=plain)
    lease = pool.acquire(10_000)
    assert lease is not None and lease.size == 16384
    lease.release()
    assert pool.allocated_bytes == 0 and pool.in_use_bytes == 0


def waiting_probe(at: int) -> tuple[threading.Event, Callable[[], bool]]:
    """A pool's ``stopped`` callback that never stops it, and an event set at its ``at``-th call
    (the pool calls it once per turn of an acquire's wait loop)."""
    calls = []
    reached = threading.Event()

    def stopped() -> bool:
        calls.append(1)
        if len(calls) >= at:
            reached.set()
        return False

    return reached, stopped


def test_a_full_pool_blocks_until_the_writer_gives_a_buffer_back():
    waited, stopped = waiting_probe(4)
    pool = PinnedPool(8192, block=True, allocate=plain, stopped=stopped)
    held = [pool.acquire(4096), pool.acquire(4096)]
    got: list = []
    t = threading.Thread(target=lambda: got.append(pool.acquire(2048)))
    t.start()
    assert waited.wait(10)  # calls 1-2: the acquires above; 3-4: this one's first two turns (it waited)
    assert got == [] and t.is_alive()  # waiting: allocating would pass the bound
    held.pop().release()
    t.join(5)
    assert got and got[0] is not None and pool.allocated_bytes <= 8192
    assert pool.evictions == 1  # the 4096 buffer made room for the 2048 class


def test_a_full_pool_refuses_at_once_when_the_store_drops():
    pool = PinnedPool(8192, block=False, allocate=plain)
    held = [pool.acquire(4096), pool.acquire(4096)]
    assert pool.acquire(4096) is None  # (a blocking acquire would never return: nothing gives back)
    assert pool.refused == 1 and pool.allocations == 2
    held[0].release()
    assert pool.acquire(4096) is not None  # room again: reused


def test_a_waiting_producer_is_released_when_the_writer_dies():
    dead = threading.Event()
    asked = threading.Event()
    calls = []

    def stopped() -> bool:
        calls.append(1)
        if len(calls) == 2:  # the second acquire's first turn: it waits next
            asked.set()
        return dead.is_set()

    pool = PinnedPool(4096, block=True, allocate=plain, stopped=stopped)
    held = pool.acquire(4096)
    got: list = []
    t = threading.Thread(target=lambda: got.append(pool.acquire(4096)))
    t.start()
    assert asked.wait(10)
    dead.set()
    t.join(5)
    assert got == [None] and not t.is_alive()
    held.release()


def test_a_lease_dropped_without_release_comes_back():
    pool = PinnedPool(8192, allocate=plain)
    lease = pool.acquire(4096)
    del lease
    gc.collect()
    assert pool.in_use_bytes == 0 and pool.acquire(4096) is not None and pool.reuses == 1


def test_a_dropped_frame_is_counted_like_a_queue_drop(tmp_path):
    with spikestore.Store(tmp_path / "s.zarr", on_full="drop") as store:
        frame = Frame("output/1", 0, 0, 0.0, None, "float32", (4,), 0, dropped=True)
        with pytest.warns(Warning):
            assert store._writer.submit(frame) is False
        assert store.dropped == 1


# -- the hand-off: event, pinned buffer, device tensors -------------------------------------

class LateCopy:
    """A stand-in CUDA event: the device copy lands in the pinned buffer when the host waits."""

    def __init__(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        self.dst, self.src, self.done = dst, src, False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        raw = self.src.reshape(-1).view(torch.uint8)
        self.dst[: raw.numel()].copy_(raw)
        self.done = True


def flight(device: CudaCapture, key: str, t: torch.Tensor, *, pack: bool, encoding: str = "auto"
           ) -> tuple[Frame, LateCopy]:
    """A frame as CudaCapture.capture leaves it, with a CPU stand-in for the device work."""
    src = pack_torch_flagged(t) if pack else t.contiguous()
    lease = device.pool.acquire(src.numel() * src.element_size())
    event = LateCopy(lease.buffer, src)
    on_not_binary = None if encoding == "bits" else (lambda: device.raw_streams.add(key))
    inflight = InFlight(event, lease, tuple(t.shape), t.dtype, packed=pack, device=(t.clone(), src),
                        on_not_binary=on_not_binary)
    name = str(t.dtype).removeprefix("torch.")
    frame = Frame(key, 3, 0, 0.0, None, name, tuple(t.shape), 0, encoding, inflight=inflight)
    return frame, event


def test_the_writer_reads_the_bits_only_after_the_event_and_then_releases_everything():
    device = CudaCapture(1 << 20, allocate=plain)
    spikes = (torch.rand(4, 3, 13) < 0.3).float()
    frame, event = flight(device, "output/1", spikes, pack=True)
    snap = weakref.ref(frame.inflight.device[0])
    assert not event.query() and device.pool.in_use_bytes > 0
    prepared = prepare(frame, Packer())
    assert event.query()
    assert prepared.encoding == "bits"
    np.testing.assert_array_equal(prepared.stored, np.packbits(spikes.numpy().astype(bool), axis=-1,
                                                               bitorder="little"))
    assert frame.inflight is None and snap() is None  # device tensors dropped after the wait
    assert device.pool.in_use_bytes == 0  # the pinned buffer is back...
    device.pool.acquire(1).buffer.fill_(0)  # ...and what the writer kept is its own copy
    np.testing.assert_array_equal(prepared.stored, np.packbits(spikes.numpy().astype(bool), axis=-1,
                                                               bitorder="little"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int16, torch.bool, torch.complex64])
def test_raw_records_come_out_of_the_pinned_buffer_exactly(dtype):
    device = CudaCapture(1 << 20, allocate=plain)
    t = (torch.randn(2, 5) * 3).to(dtype)
    frame, _ = flight(device, "v/1", t, pack=False, encoding="raw")
    prepared = prepare(frame, Packer())
    want = dtypes.from_tensor(t)
    assert prepared.stored.dtype == want.dtype
    np.testing.assert_array_equal(prepared.stored, want)
    assert device.pool.in_use_bytes == 0


def test_a_dropped_frames_buffer_is_lent_again_only_once_its_copy_has_ended():
    """A frame dropped before the writer waited on it (its stream had failed, the queue refused it):
    the copy into its pinned buffer may still be running, so the buffer is not lent to the next record,
    nor the snapshot freed, until the event says the copy is done; nobody waits for that."""
    device = CudaCapture(1 << 20, allocate=plain)
    frame, event = flight(device, "output/1", (torch.rand(4, 40) < 0.5).float(), pack=True)
    lease = frame.inflight.lease
    buffer, size, snap = lease.buffer, lease.size, weakref.ref(frame.inflight.device[0])
    del frame, lease
    gc.collect()
    assert device.pool.stats()["in_use_bytes"] == size and snap() is not None  # (the copy may still run)
    second = device.pool.acquire(size)
    assert second.buffer is not buffer and device.pool.in_use_bytes == 2 * size
    event.synchronize()  # the copy ends (a stand-in: it lands now)
    assert device.pool.stats()["in_use_bytes"] == size and snap() is None
    third = device.pool.acquire(size)
    assert third.buffer is buffer and device.pool.reuses == 1
    second.release()
    third.release()
    assert device.pool.in_use_bytes == 0


def test_a_record_that_is_not_binary_is_fetched_from_the_snapshot_and_stored_raw():
    device = CudaCapture(1 << 20, allocate=plain)
    v = (torch.rand(4, 2, 9) < 0.5).float()
    v[1, 1, 3] = 0.75  # one value: the device flag says "not binary"
    frame, _ = flight(device, "v_seq/1", v, pack=True)
    prepared = prepare(frame, Packer())
    assert prepared.encoding == "raw"
    np.testing.assert_array_equal(prepared.stored, v.numpy())  # nothing lost
    assert device.raw_streams == {"v_seq/1"}  # later records of the stream are copied raw at once
    assert device.pool.in_use_bytes == 0


def test_forced_bits_on_a_record_that_is_not_binary_names_stream_and_step():
    device = CudaCapture(1 << 20, allocate=plain)
    v = torch.tensor([[0.0, 1.0, -0.0]])  # -0.0: not the bit pattern of 0
    frame, _ = flight(device, "output/fc", v, pack=True, encoding="bits")
    with pytest.raises(InvalidValueError, match=r"stream 'output/fc', step 3: encoding='bits'"):
        prepare(frame, Packer())
    assert device.raw_streams == set() and device.pool.in_use_bytes == 0


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_a_binary_cuda_record_in_an_open_raw_segment_stays_raw_as_on_the_cpu(dtype):
    """Packed on the device, then stored raw: the values the CPU path would store raw, in the same
    dtype (bfloat16 as its uint16 bit patterns, 0x3F80 for 1)."""
    device = CudaCapture(1 << 20, allocate=plain)
    spikes = (torch.rand(3, 8) < 0.5).to(dtype)
    frame, _ = flight(device, "v/1", spikes, pack=True)
    prepared = prepare(frame, Packer(), keep_raw=True)
    assert prepared.encoding == "raw"
    want = dtypes.from_tensor(spikes)
    assert prepared.stored.dtype == want.dtype
    np.testing.assert_array_equal(prepared.stored, want)


def test_stand_in_cuda_frames_through_a_store_read_back_like_cpu_records(tmp_path):
    """The writer's whole path (segments, encodings, index) for CUDA-style frames."""
    device = CudaCapture(1 << 20, allocate=plain)
    g = torch.Generator().manual_seed(5)
    records = [(torch.rand(2, 4, 11, generator=g) < 0.3).float() for _ in range(3)]
    records.append(torch.randn(2, 4, 11, generator=g))          # not binary: fetched, raw
    records.append((torch.rand(2, 4, 11, generator=g) < 0.3).float())
    with spikestore.Store(tmp_path / "s.zarr") as store:
        for step, r in enumerate(records):
            frame, _ = flight(device, "output/x", r, pack="output/x" not in device.raw_streams)
            frame.step = step
            assert store._writer.submit(frame)
    s = spikestore.open(tmp_path / "s.zarr")["output/x"]
    assert len(s) == 5 and s.steps.tolist() == [0, 1, 2, 3, 4]
    for i, r in enumerate(records):
        np.testing.assert_array_equal(s[i], r.numpy())
    assert device.pool.in_use_bytes == 0


# -- packing on the device: the CPU path's bytes -------------------------------------------

def cpu_bytes(t: torch.Tensor) -> np.ndarray | None:
    """What the CPU path stores for ``t``: the capture kernel (float32) or the writer's Packer."""
    arr = dtypes.from_tensor(t)
    if t.dtype == torch.float32:
        packed = pack_float32(np.ascontiguousarray(arr))
        return None if packed is None else packed.copy()
    if t.dtype == torch.bfloat16:
        mask = dtypes.bfloat16_binary_mask(arr)
        return None if mask is None else Packer().pack(mask).copy()
    packed = Packer().pack(arr)
    return None if packed is None else packed.copy()


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=[str(d).removeprefix("torch.") for d in ALL_DTYPES])
@pytest.mark.parametrize("shape", [(4, 2, 13), (8, 3, 64), (1,), (5, 8), (2, 3, 1)])
def test_device_packing_gives_the_cpu_paths_bytes_for_every_dtype(dtype, shape):
    g = torch.Generator().manual_seed(sum(shape))
    t = (torch.rand(shape, generator=g) < 0.4).to(dtype)
    flat = pack_torch_flagged(t)
    k = packed_nbytes(shape)
    assert flat.dtype == torch.uint8 and flat.numel() == k + 1 and flat[k] == 1
    want = cpu_bytes(t)
    assert want is not None
    assert flat[:k].numpy().tobytes() == want.tobytes()
    if dtype != torch.bool:
        bad = t.clone()
        bad.view(-1)[-1] = 2
        assert pack_torch_flagged(bad)[k] == 0 and cpu_bytes(bad) is None


@pytest.mark.parametrize("value", [-0.0, float("nan"), 0.5, float("inf")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_device_check_compares_bits_like_the_cpu(value, dtype):
    t = torch.tensor([[0.0, 1.0, value, 1.0]], dtype=dtype)
    assert pack_torch_flagged(t)[-1] == 0
    assert cpu_bytes(t) is None


# -- the capture itself, with torch.cuda stood in by CPU fakes --------------------------------

class FakeStream:
    def __init__(self, device: object = None) -> None:
        self.waited: list = []

    def wait_stream(self, other: FakeStream) -> None:
        self.waited.append(other)

    def wait_event(self, event: FakeEvent) -> None:
        assert event.recorded, "the caller's stream waits on an event recorded by the side stream"
        self.waited.append(event)


class FakeEvent:
    def __init__(self, blocking: bool = False) -> None:
        self.recorded = False
        self.synchronized = 0

    def record(self, stream: FakeStream) -> None:
        self.recorded = True

    def query(self) -> bool:
        return self.recorded

    def synchronize(self) -> None:
        assert self.recorded
        self.synchronized += 1


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's stream and event API on the CPU: the device work runs eagerly."""
    import contextlib

    from spikestore._write import cuda

    current = FakeStream()
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(cuda, "_STREAMS", {})
    return current


def test_the_capture_code_runs_end_to_end_with_fake_streams(tmp_path, fake_cuda):
    from spikestore._write.capture import _capture_cuda

    g = torch.Generator().manual_seed(2)
    records = [("output/f32", (torch.rand(4, 3, 13, generator=g) < 0.3).float()),
               ("output/bf16", (torch.rand(2, 9, generator=g) < 0.3).bfloat16()),
               ("output/bool", torch.rand(3, 16, generator=g) < 0.5),
               ("v/f32", torch.randn(4, 3, 13, generator=g)),
               ("v/f32", torch.randn(4, 3, 13, generator=g)),     # copied raw at once: known not binary
               ("grad/0d", torch.randn((), generator=g)),
               ("x/c64", torch.randn(3, generator=g, dtype=torch.complex64)),
               ("x/i16", torch.randint(-9, 9, (7,), generator=g, dtype=torch.int16))]
    with spikestore.Store(tmp_path / "s.zarr") as store:
        device = CudaCapture(1 << 20, allocate=plain)
        for step, (key, t) in enumerate(records):
            name = str(t.dtype).removeprefix("torch.")
            frame = _capture_cuda(key, t, step, 0, 0.0, name, tuple(t.shape), "auto", device)
            assert frame.inflight is not None and frame.nbytes >= t.numel() * t.element_size()
            packed = frame.inflight.packed
            assert packed == (t.dim() > 0 and not t.is_complex() and not (key == "v/f32" and step == 4))
            assert store._writer.submit(frame)
            store.flush()  # (the writer learns that v/f32 is not binary from its first record)
        assert fake_cuda.waited and isinstance(fake_cuda.waited[-1], FakeEvent)
        store.flush()
        assert device.raw_streams == {"v/f32", "x/i16"}  # found not binary on the "device"
        assert device.pool.in_use_bytes == 0 and device.pool.reuses > 0
    run = spikestore.open(tmp_path / "s.zarr")
    seen: dict[str, int] = {}
    for key, t in records:
        i = seen[key] = seen.get(key, -1) + 1
        got = run[key][i]
        want = dtypes.from_tensor(t)
        np.testing.assert_array_equal(got.view(np.uint16) if t.dtype == torch.bfloat16 else got, want)
    assert run["output/f32"].segments[0].encoding == "bits"
    assert run["v/f32"].segments[0].encoding == "raw"


def test_the_callers_stream_waits_for_the_clone_alone(fake_cuda):
    """The clone runs on one side stream; packing and the copy to the host on another, which waits for
    the clone too: the caller's stream never queues behind earlier records' copies."""
    from spikestore._write import cuda
    from spikestore._write.capture import _capture_cuda

    device = CudaCapture(1 << 20, allocate=plain)
    t = (torch.rand(4, 40) < 0.5).float()
    frame = _capture_cuda("output/1", t, 0, 0, 0.0, "float32", (4, 40), "auto", device)
    streams = {role: s for (_, role), s in cuda._STREAMS.items()}
    assert set(streams) == {"capture", "copy"}
    (read,) = fake_cuda.waited  # the caller's stream: one event, on the device
    assert streams["capture"].waited == [fake_cuda] and streams["copy"].waited == [read]
    assert frame.inflight.event is not read  # the writer waits for the copy, the caller for the clone only
    frame.inflight.close()


def test_a_full_pool_gives_a_dropped_frame_before_any_device_work(fake_cuda):
    from spikestore._write.capture import _capture_cuda

    device = CudaCapture(4096, block=False, allocate=plain)
    held = device.pool.acquire(4096)
    t = torch.ones(8, 64)
    frame = _capture_cuda("output/1", t, 0, 0, 0.0, "float32", (8, 64), "auto", device)
    assert frame.dropped and frame.inflight is None and frame.nbytes == 0
    assert fake_cuda.waited == []  # nothing was queued on the device
    held.release()


def test_the_capture_code_writes_the_cpu_paths_store_byte_for_byte(tmp_path, fake_cuda):
    """Whenever the writer learns that a stream is not binary (it runs behind), the
    store holds the same chunks as one recorded from CPU tensors."""
    from spikestore._write.capture import _capture_cuda

    records = mixed_records()
    write_records(tmp_path / "cpu.zarr", records, "cpu")
    with spikestore.Store(tmp_path / "fake.zarr", mode="w") as store:
        device = CudaCapture(1 << 20, allocate=plain)
        for i, (key, t) in enumerate(records):
            name = str(t.dtype).removeprefix("torch.")
            frame = _capture_cuda(key, t, i // 14, 0, 0.0, name, tuple(t.shape), "auto", device)
            assert store._writer.submit(frame)
    cpu, fake = data_files(tmp_path / "cpu.zarr"), data_files(tmp_path / "fake.zarr")
    assert sorted(cpu) == sorted(fake)
    assert [k for k in cpu if cpu[k] != fake[k]] == []


def test_the_recorded_tensor_and_the_snapshot_live_until_the_writer_has_waited(fake_cuda):
    """No record_stream: the frame keeps the caller's tensor, so its memory goes to no
    other allocation before the side stream's clone has read it."""
    from spikestore._write.capture import _capture_cuda

    device = CudaCapture(1 << 20, allocate=plain)
    t = (torch.rand(6, 20) < 0.5).float()
    want = np.packbits(t.numpy().astype(bool), axis=-1, bitorder="little")
    frame = _capture_cuda("output/1", t, 0, 0, 0.0, "float32", (6, 20), "auto", device)
    caller, snap = weakref.ref(t), weakref.ref(frame.inflight.device[0])
    del t
    gc.collect()
    assert caller() is not None and snap() is not None  # the caller dropped it; the frame did not
    prepared = prepare(frame, Packer())
    gc.collect()
    assert caller() is None and snap() is None
    np.testing.assert_array_equal(prepared.stored, want)


@pytest.mark.parametrize("on_full", ["block", "drop"])
def test_a_stores_pinned_pool_has_the_queue_budget_and_policy(tmp_path, on_full):
    with spikestore.Store(tmp_path / "s.zarr", max_pending_bytes=3 << 20, on_full=on_full) as store:
        pool = store.pinned_pool
        assert isinstance(pool, PinnedPool) and pool.max_bytes == 3 << 20 and pool.block == (on_full == "block")
        assert pool.stats()["allocated_bytes"] == 0  # nothing pinned until a CUDA record comes
