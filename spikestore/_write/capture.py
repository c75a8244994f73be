"""Turn a hook payload into a :class:`Frame` the writer thread can consume.

A record is a snapshot unless the caller says otherwise (``copy=True``, the
default): what is stored is what the caller handed over, whatever happens to
its tensor afterwards (in-place ops, writes through ``.numpy()`` or
``.data``, the memory reused). The training thread pays for that as little
as it can. On the CPU a float32 tensor (spikes, in SpikingJelly) is checked
and bit-packed at once, in one compiled pass that releases the GIL: the
frame then holds 1/32 of the bytes and no tensor, so the allocator gets the
memory back at once even when the writer is behind. Any other CPU tensor is
copied into a contiguous numpy buffer that only the frame holds.

A CUDA tensor goes to :mod:`spikestore._write.cuda` (docs/cuda.md):
nothing there synchronises. On a side stream it is cloned (the caller's
stream waits for the clone only), packed on the device with a device-side
binary flag, and copied into a pinned buffer of the store's bounded pool
with ``non_blocking=True``; the frame keeps the device tensors and an event,
and :func:`prepare` on the writer thread waits on the event, copies the
bytes out and gives the buffer back. A record that was not binary after all
is fetched from the kept snapshot and stored raw: nothing is lost.

With ``copy=False`` a CPU tensor that is not packed at once reaches the
writer as it is, together with its autograd version counter. The writer
copies or packs its values, then drops the record if the counter moved
(:func:`check_intact`); writes the counter cannot see are the caller's to
avoid (``Store.append`` documents which).
"""

from __future__ import annotations

import operator
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikestore._format import dtypes
from spikestore._format.checks import MAX_RECORD_DIMS
from spikestore._write.cuda import CudaCapture
from spikestore.codecs import _packing as packing
from spikestore.codecs._packing import Packer, unpack_bits
from spikestore.codecs._precision import apply_precision
from spikestore.errors import InPlaceModificationError, InvalidArgumentError, InvalidValueError

__all__ = ["MAX_STEP", "Frame", "Prepared", "capture", "check_intact", "check_step", "prepare"]

_NUMERIC_KINDS = "biufc"
#: Largest step the int64 step index holds.
MAX_STEP = 2**63 - 1



@dataclass(slots=True)
class Frame:
    """One record handed from the training thread to the writer."""

    key: str
    step: int
    call: int
    time: float
    data: Any  # numpy array or CPU tensor (CUDA: None until prepare() takes it from ``inflight``)
    dtype: str  # logical dtype name
    shape: tuple[int, ...]
    nbytes: int
    encoding: str = "auto"  # "auto" | "bits" | "raw" wanted by the producer
    version: int = -1  # copy=False: torch version counter of ``data`` at capture; -1: a snapshot
    source: Any = None  # copy=False: the tensor whose version is checked
    inflight: Any = None  # CUDA: the device side until the writer has the bytes (cuda.InFlight)
    extra: dict[str, Any] = field(default_factory=dict)
    packed: bool = False  # data is already bit-packed (``uint8``) and the record binary
    dropped: bool = False  # CUDA: refused by the full pinned pool (on_full="drop"); nothing to write


@dataclass(slots=True)
class Prepared:
    """A frame converted for storage: what one segment row holds."""

    encoding: str  # "bits" or "raw"
    stored: np.ndarray  # packed uint8 for bits, the values for raw
    dtype: str
    shape: tuple[int, ...]
    precision: str | None = None  # lossy storage of raw floats, when asked for


def _torch_dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def check_step(step: Any, key: str | None = None) -> int:
    """Return ``step`` as an int, or raise if the step index cannot hold it.

    Accepts ``int``, numpy integers and any object with ``__index__``, in
    ``0 <= step < 2**63``; refuses ``bool`` and floats (``1.5`` is not
    rounded). ``key`` names the stream in the message (``None``: ``set_step``).

    Raises
    ------
    InvalidArgumentError
        For anything else.
    """
    where = "set_step" if key is None else f"stream {key!r}"
    if isinstance(step, bool):
        raise InvalidArgumentError(f"{where}: step must be an int, not bool ({step!r}); pass int(step)")
    try:
        value = operator.index(step)
    except TypeError:
        raise InvalidArgumentError(
            f"{where}: step must be an int (or numpy integer), not {type(step).__name__} ({step!r}); "
            "steps are never rounded, pass an integral step such as int(step)") from None
    if not 0 <= value <= MAX_STEP:
        raise InvalidArgumentError(
            f"{where}: step {value} is out of range; steps are stored as int64 and must be in "
            f"0 <= step <= 2**63 - 1 ({MAX_STEP})")
    return value


def _check_dims(key: str, step: int, shape: tuple[int, ...]) -> None:
    if len(shape) > MAX_RECORD_DIMS:
        raise InvalidValueError(
            f"stream {key!r}, step {step}: the record has {len(shape)} dimensions; at most "
            f"{MAX_RECORD_DIMS} can be stored and read back (the stored array adds one axis, and "
            "HDF5 and numpy's bit unpacking stop at 32); reshape it first, e.g. value.reshape(-1) "
            "or merge adjacent axes")


def capture(key: str, value: Any, step: int, call: int, *, copy: bool = True,
            encoding: str = "auto", device: CudaCapture | None = None) -> Frame:
    """Build a frame from a tensor, array or Python number.

    With ``copy`` (the default) the frame is a snapshot; ``copy=False``
    hands a CPU tensor over as it is (numpy arrays and numbers are always
    copied; CUDA tensors always give a snapshot). ``device`` is the store's
    CUDA state (pinned pool, raw streams; :mod:`spikestore._write.cuda`).

    Negative and conjugate views (``t.conj()``, ``t.conj().imag``) are
    resolved here, on the calling thread: numpy cannot read them.

    Raises
    ------
    InvalidValueError
        For anything that is not a strided numeric tensor, a numeric numpy
        array or a Python/numpy number; for dtypes with no exact portable
        on-disk type (``torch.complex32``, numpy ``longdouble`` and
        ``clongdouble`` wider than 64/128 bits); and for records of more than
        :data:`MAX_RECORD_DIMS` dimensions. Nothing is ever pickled.
    """
    now = time.time()
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        return _capture_tensor(key, value, step, call, now, copy, encoding, device)
    if isinstance(value, (bool, int, float, complex, np.generic, np.ndarray)):
        arr = _little_endian_copy(value)  # callers may reuse their arrays
        if arr.dtype.kind not in _NUMERIC_KINDS:
            raise InvalidValueError(
                f"stream {key!r}, step {step}: cannot record a numpy array of dtype "
                f"{arr.dtype}; only bool, integer, float and complex data can be stored"
            )
        _check_numpy_dtype(key, step, arr.dtype)
        _check_dims(key, step, arr.shape)
        return Frame(key, step, call, now, arr, arr.dtype.name, arr.shape, arr.nbytes, encoding)
    raise InvalidValueError(
        f"stream {key!r}, step {step}: cannot record a value of type "
        f"{type(value).__module__}.{type(value).__qualname__}; record tensors, numpy arrays "
        "or numbers (return one of those, or a tuple/list/dict of them, from function_on_*)"
    )


def _little_endian_copy(value: Any) -> np.ndarray:
    """A copy of ``value`` in little-endian byte order, the order every stored array holds (docs/format.md).

    Records of one logical dtype then share one segment whatever byte order they came in, and the
    writer's buffers, its chunks and the arrays' declared types agree.
    """
    arr = np.asarray(value)
    return np.array(arr, dtype=arr.dtype.newbyteorder("<"), copy=True)


def _check_numpy_dtype(key: str, step: int, dtype: np.dtype) -> None:
    # longdouble is 80-bit extended in 16 bytes on x86-64, 128-bit quad on some
    # ARM, plain float64 on others: no portable on-disk type holds it exactly.
    if (dtype.kind == "f" and dtype.itemsize > 8) or (dtype.kind == "c" and dtype.itemsize > 16):
        wider = "float64" if dtype.kind == "f" else "complex128"
        raise InvalidValueError(
            f"stream {key!r}, step {step}: dtype {dtype} (numpy longdouble/clongdouble) has no "
            f"portable on-disk type and cannot be stored exactly; convert it with "
            f"value.astype(np.{wider}) (rounds to {wider}) before recording")


def _capture_tensor(key: str, t: Any, step: int, call: int, now: float, copy: bool,
                    encoding: str, device: CudaCapture | None) -> Frame:
    import torch

    if t.layout != torch.strided:
        raise InvalidValueError(
            f"stream {key!r}, step {step}: {t.layout} tensors are not supported; "
            "record t.to_dense() instead"
        )
    name = _torch_dtype_name(t)
    if not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool
            or name in ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")):
        raise InvalidValueError(
            f"stream {key!r}, step {step}: dtype {t.dtype} cannot be stored; convert it "
            "to a standard integer or float dtype first"
        )
    if name.startswith("float8"):
        raise InvalidValueError(
            f"stream {key!r}, step {step}: float8 tensors are not supported; record t.float()"
        )
    if t.dtype == torch.complex32:
        raise InvalidValueError(
            f"stream {key!r}, step {step}: dtype torch.complex32 (chalf) has no numpy or on-disk "
            "type; record t.to(torch.complex64) (exact: every complex32 is a complex64)")
    _check_dims(key, step, tuple(t.shape))
    t = t.detach()
    owned = False  # t is a tensor made here, which nobody else holds
    # A conjugate or negative view (t.conj(), t.conj().imag) is a lazy flag that
    # numpy cannot read: materialise it (a copy, so later in-place ops do not reach it).
    if t.is_conj():
        t, owned = t.resolve_conj(), True
    if t.is_neg():
        t, owned = t.resolve_neg(), True
    shape = tuple(t.shape)
    nbytes = t.numel() * t.element_size()
    if t.device.type == "cuda":
        return _capture_cuda(key, t, step, call, now, name, shape, encoding, device)
    if t.device.type == "meta":
        raise InvalidValueError(
            f"stream {key!r}, step {step}: the tensor is on the meta device and has no values to "
            "record; record a tensor that holds data (build or move the model onto a real device, "
            "e.g. module.to_empty(device='cpu') and load its weights, before recording)")
    if t.device.type != "cpu":
        t, owned = t.to("cpu"), True
    if (t.dtype == torch.float32 and encoding != "raw" and t.dim() > 0 and t.numel() > 0
            and packing.kernels_ready()):
        packed = _pack_now(t)
        if packed is not None:
            # Counted at the float size: the queue bound also bounds the writer's
            # lag (what a crash loses), which 32x smaller frames would stretch.
            return Frame(key, step, call, now, packed, name, shape, nbytes, encoding, packed=True)
        if encoding == "auto":
            encoding = "raw"  # checked: not binary, the writer need not look again
    if copy and not owned:
        # The snapshot, as the writer will read it (bfloat16 as its bits). numpy's
        # copy is one memcpy on this thread: torch's clone wakes its thread pool,
        # measured 4x slower for 12 MiB on a busy 2-core machine.
        return Frame(key, step, call, now, np.array(dtypes.from_tensor(t), order="C"), name, shape,
                     nbytes, encoding)
    if owned:
        return Frame(key, step, call, now, t, name, shape, nbytes, encoding)
    # torch offers the autograd version counter (bumped by every in-place op) only as
    # Tensor._version; it is what PyTorch itself checks before a backward pass.
    return Frame(key, step, call, now, t, name, shape, nbytes, encoding,
                 version=t._version, source=t)


def _pack_now(t: Any) -> np.ndarray | None:
    """Pack a float32 CPU tensor on the calling thread, or ``None`` if it is not binary."""
    return packing.pack_float32(t.contiguous().numpy())  # (a new buffer: the frame keeps it)


def _capture_cuda(key: str, t: Any, step: int, call: int, now: float, name: str,
                  shape: tuple[int, ...], encoding: str, device: CudaCapture | None) -> Frame:
    if device is None:  # (a capture outside a store: its own unbounded state)
        device = CudaCapture(1 << 62)
    got = device.capture(key, t, encoding)
    if got is None:  # the pinned pool is full and the store drops records
        return Frame(key, step, call, now, None, name, shape, 0, encoding, dropped=True)
    flight, held = got
    return Frame(key, step, call, now, None, name, shape, held, encoding, inflight=flight)


def prepare(frame: Frame, packer: Packer, *, keep_raw: bool = False) -> Prepared:
    """Writer-thread half of capture: convert, pick the encoding, pack.

    With ``keep_raw`` (the stream's open segment is raw and fits this
    record) an ``"auto"`` record is stored raw without trying to pack it.

    Raises
    ------
    InvalidValueError
        When ``encoding="bits"`` was forced on a record that is not binary.
    """
    if frame.inflight is not None:  # CUDA: wait on the event, copy out, give back (cuda.InFlight)
        frame.data, frame.packed, not_binary = frame.inflight.finish()
        if frame.inflight.nonfinite is not None:  # the device's finite check, for a flight recorder
            frame.extra["device_nonfinite"] = frame.inflight.nonfinite
        frame.inflight = None
        if not_binary and frame.encoding == "auto":
            frame.encoding = "raw"  # checked on the device: the writer need not look again
    # A binary record arriving while the stream's open segment is raw (same
    # shape and dtype) stays raw: switching would open a segment per record
    # for streams that are only sometimes 0/1 (rates, a silent layer's v).
    want = "raw" if keep_raw and frame.encoding == "auto" else frame.encoding
    data = frame.data
    if frame.packed:
        if want != "raw":
            return Prepared("bits", data, frame.dtype, frame.shape)
        data = _raw_from_bits(data, frame.shape[-1], frame.dtype)  # exact: every value was 0 or 1
    arr = data if isinstance(data, np.ndarray) else dtypes.from_tensor(data)
    packed = None
    if want != "raw":
        if frame.dtype == dtypes.BFLOAT16:  # travels as its uint16 bit patterns
            mask = dtypes.bfloat16_binary_mask(arr)
            packed = None if mask is None else packer.pack(mask)
        else:
            packed = packer.pack(arr)
        if packed is None and want == "bits":
            raise InvalidValueError(
                f"stream {frame.key!r}, step {frame.step}: encoding='bits' was requested "
                "but the record is not all 0 and 1"
            )
    if packed is not None:
        return Prepared("bits", packed, frame.dtype, frame.shape)
    precision = frame.extra.get("precision")
    stored = arr if precision is None else apply_precision(arr, precision, frame.key)
    # Rows hold their values before check_intact() vouches for them: values still
    # read from the caller's tensor (copy=False) are copied here, as are strided ones.
    if not stored.flags.c_contiguous or (frame.version >= 0 and np.may_share_memory(stored, arr)):
        stored = stored.copy()  # (np.ascontiguousarray would turn 0-d into 1-d)
    return Prepared("raw", stored, frame.dtype, frame.shape, precision)


def _raw_from_bits(packed: np.ndarray, n: int, name: str) -> np.ndarray:
    """Packed 0/1 values as the raw values a segment of logical dtype ``name`` stores (bfloat16 as its
    ``uint16`` bit patterns: numpy has no bfloat16, so unpack to float32 and take its top half)."""
    if name == dtypes.BFLOAT16:
        return dtypes.float32_to_bfloat16_bits(unpack_bits(packed, n, "float32"))
    return unpack_bits(packed, n, name)


def check_intact(frame: Frame) -> None:
    """Raise if a tensor recorded with ``copy=False`` changed in place since :func:`capture`.

    Call after :func:`prepare`, which copied or packed its values: a version
    counter that has not moved by then shows that no in-place op on the
    tensor ended before its values were taken. It cannot see writes through
    ``.numpy()`` or ``.data`` (they never move it), nor an op still running
    while the writer read the values (the counter moves when an op ends).
    The writer drops a record that fails this check, counts it and goes on.
    """
    if frame.version >= 0 and frame.source._version != frame.version:
        raise InPlaceModificationError(
            f"stream {frame.key!r}, step {frame.step}: the tensor was modified in place "
            "after it was recorded with copy=False and before the writer read it"
        )
