"""Capture on CUDA: pack on the device, copy to pinned memory, never synchronise.

The training thread (inside a hook) only queues device work and returns:

1. It takes a pinned host buffer from the store's :class:`PinnedPool`
   (bounded by the queue's byte budget; full: the store's ``on_full``
   policy, block or drop, applies before any device work is queued).
2. On a side stream that first waits for the caller's stream, it clones the
   record (the snapshot; the caller's stream then waits for the clone only,
   so what it queues next, an in-place op or a reuse of the tensor's memory,
   cannot reach the record). On a second side stream, which waits for the
   clone, it packs the snapshot with
   :func:`~spikestore.codecs._packing.pack_torch_flagged` (the bits and a
   device-side "binary" flag in one buffer, the bit order of the CPU path),
   copies that buffer (or the raw values) into the pinned buffer with
   ``non_blocking=True`` and records an event. Two streams, so that the
   caller's stream never waits behind earlier records' packing and copies
   to the host.
3. The frame holds an :class:`InFlight`: the event, the pinned lease and
   the device tensors (snapshot, packed buffer, and the recorded tensor
   itself). Nothing calls ``record_stream``: the device tensors live until
   the writer has waited on the event, then :meth:`InFlight.finish` drops
   them and gives the pinned buffer back.

With a flight recorder's ``"nonfinite"`` trigger armed, a float or complex
record also gets a device-side finite flag (``torch.isfinite(x).all()``),
one byte after the values or the binary flag in the same pinned buffer: it
travels with the record's copy, and the writer reads it with the bits
(:attr:`InFlight.nonfinite`), so nothing synchronises for the check either.

The writer thread waits on the event (``cudaEventSynchronize``, which
``torch.cuda.set_sync_debug_mode`` does not flag, on the writer thread
only), copies the bits out of the pinned buffer and releases it. When the
flag says the record was not binary, nothing is lost: the snapshot is still
on the device, the writer copies its values (on a stream of its own) and
stores the record raw, and the stream is marked raw so that its later
records are copied raw at once, without a packing attempt. With
``encoding="bits"`` the writer then raises the usual
:class:`~spikestore.errors.InvalidValueError` naming stream and step.

Memory bounds (docs/cuda.md): pinned bytes allocated <= the queue budget
(one larger record is let through alone, as the queue does), and the device
bytes the frames in flight allocated (snapshots, packed buffers) are counted
in the queue's budget, so they stay under ``max_pending_bytes`` too. The
recorded tensors they keep referenced are the caller's (autograd usually
keeps them for the backward pass anyway) and are not counted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from spikestore._format import dtypes
from spikestore._write.pinned import PinnedLease, PinnedPool
from spikestore.codecs._packing import packed_length, packed_nbytes

__all__ = ["CudaCapture", "InFlight"]


class InFlight:
    """The device side of one CUDA frame, until the writer has its bytes.

    Parameters
    ----------
    event
        Recorded on the side stream after the copy into ``lease``'s buffer;
        anything with ``synchronize()`` (tests pass a stand-in).
    lease
        The pinned buffer the copy writes into.
    shape, dtype
        The record's shape and torch dtype.
    packed
        Whether the buffer holds packed bits plus the flag byte, or the raw values.
    device
        Device tensors that must live until the event completes: the
        snapshot first (the values, fetched if the flag says "not binary"),
        then the packed buffer and the recorded tensor.
    on_not_binary
        Called with no argument when the flag says the record was not binary.
    finite_at
        Where the device-side finite flag lies in the buffer, if the record has one.
    """

    __slots__ = ("device", "dtype", "event", "finite_at", "lease", "nonfinite", "on_not_binary", "packed",
                 "shape", "waited")

    def __init__(self, event: Any, lease: PinnedLease, shape: tuple[int, ...], dtype: Any, *,
                 packed: bool, device: tuple[Any, ...],
                 on_not_binary: Callable[[], None] | None = None, finite_at: int | None = None) -> None:
        self.event = event
        self.finite_at = finite_at
        #: After :meth:`finish`: whether the device found NaN or ±Inf (``None``: not checked there).
        self.nonfinite: bool | None = None
        self.lease = lease
        self.shape = shape
        self.dtype = dtype
        self.packed = packed
        self.device = device
        self.on_not_binary = on_not_binary
        self.waited = False

    def finish(self) -> tuple[np.ndarray, bool, bool]:
        """Wait for the copy, take the record out of the pinned buffer, release everything.

        Runs on the writer thread. Returns ``(values, packed, not_binary)``:
        the packed bits (``packed``), or the raw values, as numpy arrays the
        pool does not own; ``not_binary`` when a packing attempt found a
        value other than 0 and 1 (the values then come from the snapshot).
        """
        try:
            self.event.synchronize()  # before any byte of the buffer is read
            self.waited = True
            host = self.lease.buffer
            if self.finite_at is not None:
                self.nonfinite = not bool(host[self.finite_at])
            if not self.packed:
                nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
                values = dtypes.from_tensor(host[:nbytes].view(self.dtype).view(self.shape)).copy()
                return values, False, False
            k = packed_nbytes(self.shape)
            raw = host.numpy()
            if raw[k]:
                bits = raw[:k].copy().reshape((*self.shape[:-1], packed_length(self.shape[-1])))
                return bits, True, False
            if self.on_not_binary is not None:
                self.on_not_binary()
            return fetch(self.device[0]), False, True
        finally:
            self.close()

    def close(self) -> None:
        """Drop the device tensors and give the pinned buffer back (idempotent).

        A frame dropped before the writer waited on its event (its stream had
        failed, the queue refused it, a check after capture raised) hands its
        event and device tensors to the pool with the buffer: the buffer is
        lent again, and the tensors freed, only once the copy has ended, and
        nobody waits for that (:meth:`PinnedPool.release`).
        """
        device, self.device = self.device, ()
        if self.waited:
            self.lease.release()
        else:
            self.lease.release(after=self.event, keep=device)

    def __del__(self) -> None:  # a dropped frame: see close()
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to give back to
            self.close()


def _event(blocking: bool = False) -> Any:
    """A CUDA event (torch's constructor carries no type hints)."""
    import torch

    new: Callable[..., Any] = torch.cuda.Event
    return new(blocking=blocking)


def _side_stream(device: Any) -> Any:
    """A new CUDA stream on ``device`` (torch's constructor carries no type hints)."""
    import torch

    new: Callable[..., Any] = torch.cuda.Stream
    return new(device)


def fetch(snap: Any) -> np.ndarray:
    """The values of a device snapshot, on the writer thread, without a flagged synchronisation.

    A non-blocking copy on a stream of the writer's own, then the host waits on
    its event: ``torch.cuda.set_sync_debug_mode`` sees no synchronisation, and
    the training thread's streams are not involved.
    """
    import torch

    if snap.device.type != "cuda":  # (tests: a CPU stand-in)
        return dtypes.from_tensor(snap).copy()
    # Pinned (PyTorch's own pinned cache, not the pool: the writer must never wait on
    # the pool it refills), so the copy is a true asynchronous one.
    out = torch.empty(snap.shape, dtype=snap.dtype, pin_memory=True)
    stream = _stream(snap.device, "fetch")
    with torch.cuda.stream(stream):
        out.copy_(snap, non_blocking=True)
        done = _event(blocking=True)
        done.record(stream)
    done.synchronize()
    return dtypes.from_tensor(out).copy()


_STREAMS: dict[tuple[Any, str], Any] = {}
_STREAMS_LOCK = threading.Lock()


def _stream(device: Any, role: str) -> Any:
    """This process's side stream for ``role`` (``"capture"``, ``"copy"``, ``"fetch"``) on ``device``."""
    s = _STREAMS.get((device, role))
    if s is None:
        with _STREAMS_LOCK:
            s = _STREAMS.setdefault((device, role), _side_stream(device))
    return s


class CudaCapture:
    """One store's CUDA capture state: its pinned pool and the streams known not to be binary.

    Cheap to create and torch-free until the first CUDA record, so CPU-only
    stores pay nothing. Parameters as for :class:`PinnedPool`.
    """

    def __init__(self, max_bytes: int, *, block: bool = True,
                 stopped: Callable[[], bool] | None = None,
                 allocate: Callable[[int], Any] | None = None, check_finite: bool = False) -> None:
        self.pool = PinnedPool(max_bytes, block=block, allocate=allocate, stopped=stopped)
        #: Whether float records carry a device-side finite flag (a flight recorder's "nonfinite").
        self.check_finite = check_finite
        #: Streams with a record that was not binary: later records are copied raw at once.
        self.raw_streams: set[str] = set()

    def capture(self, key: str, t: Any, encoding: str) -> tuple[InFlight, int] | None:
        """Queue the device work for one record of ``key``; never synchronises.

        Returns the :class:`InFlight` and the bytes it holds (device plus
        pinned, what the queue counts), or ``None`` when the pool is full
        and the store drops records (or the writer died).
        """
        import torch

        from spikestore.codecs._packing import pack_torch_flagged

        nbytes = t.numel() * t.element_size()
        pack = (encoding != "raw" and t.dim() > 0 and t.numel() > 0 and not t.is_complex()
                and (encoding == "bits" or key not in self.raw_streams))
        host_bytes = packed_nbytes(tuple(t.shape)) + 1 if pack else nbytes
        finite = self.check_finite and (t.is_floating_point() or t.is_complex()) and t.numel() > 0
        lease = self.pool.acquire(host_bytes + int(finite))
        if lease is None:
            return None
        current = torch.cuda.current_stream(t.device)
        # Two side streams: the caller's stream waits for the clone alone (microseconds), never
        # behind earlier records' packing and copies to the host, which run on the second.
        clone_on, copy_on = _stream(t.device, "capture"), _stream(t.device, "copy")
        clone_on.wait_stream(current)
        with torch.cuda.stream(clone_on):
            snap = t.clone(memory_format=torch.contiguous_format)
            read = _event()
            read.record(clone_on)
        copy_on.wait_event(read)
        with torch.cuda.stream(copy_on):
            if pack:
                flat = pack_torch_flagged(snap)
                lease.buffer[:host_bytes].copy_(flat, non_blocking=True)
                device: tuple[Any, ...] = (snap, flat, t)
            else:
                lease.buffer[:nbytes].view(t.dtype).copy_(snap.view(-1), non_blocking=True)
                device = (snap, t)
            if finite:  # one byte after the values: travels with them, read by the writer
                flag = torch.isfinite(snap).all().reshape(1).to(torch.uint8)
                lease.buffer[host_bytes:host_bytes + 1].copy_(flag, non_blocking=True)
                device = (*device, flag)
            done = _event(blocking=True)  # (the writer sleeps on it instead of spinning)
            done.record(copy_on)
        # On the device (the host does not wait): what the caller queues next, an in-place
        # op on t or a new tensor in its memory, runs after the clone has read t. t itself
        # stays referenced by the frame until the writer has waited on `done`, so its memory
        # cannot go to another stream's allocation before then either (no record_stream).
        current.wait_event(read)
        on_not_binary = None if encoding == "bits" else (lambda: self.raw_streams.add(key))
        flight = InFlight(done, lease, tuple(t.shape), t.dtype, packed=pack, device=device,
                          on_not_binary=on_not_binary, finite_at=host_bytes if finite else None)
        return flight, nbytes + (host_bytes if pack else 0) + lease.size
