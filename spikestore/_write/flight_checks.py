"""The triggers a flight recorder checks each record against (docs/flight-recorder.md §3).

Runs on the writer thread, on a record as :func:`~spikestore._write.capture.prepare`
left it (packed bits, or the raw values as stored), so the training thread
never waits for a check. A CUDA record's finite check already ran on the
device (:mod:`spikestore._write.cuda`); its answer is passed in.
"""

from __future__ import annotations

import numpy as np

from spikestore._format import dtypes
from spikestore._write.capture import Prepared
from spikestore._write.flight import MAX_REASON_CHARS, FlightRecorder, trigger_name
from spikestore.codecs._packing import unpack_bits
from spikestore.codecs._precision import restore_precision
from spikestore.errors import InvalidArgumentError

__all__ = ["check_reason", "fired", "is_nonfinite", "record_values"]

#: The exponent bits of a bfloat16 stored as its uint16 bit pattern: all ones is NaN or ±Inf.
_BF16_EXPONENT = np.uint16(0x7F80)


def check_reason(reason: object, where: str) -> str:
    """``reason`` if it is a non-empty string of at most :data:`MAX_REASON_CHARS` characters, else raise.

    Raises
    ------
    InvalidArgumentError
        Naming ``where`` (who gave the reason).
    """
    if not isinstance(reason, str) or not reason or len(reason) > MAX_REASON_CHARS:
        raise InvalidArgumentError(
            f"{where}: a trigger's reason must be a non-empty str of at most {MAX_REASON_CHARS} characters, "
            f"not {reason!r:.80}")
    return reason


def is_nonfinite(p: Prepared) -> bool:
    """Whether a raw float or complex record holds NaN or ±Inf (a bits record never does)."""
    if p.encoding != "raw" or p.stored.size == 0:
        return False
    if p.dtype == dtypes.BFLOAT16 or p.precision == "bf16":  # stored as bfloat16 bit patterns
        bits = p.stored.view(np.uint16)
        return bool(np.any((bits & _BF16_EXPONENT) == _BF16_EXPONENT))
    if p.stored.dtype.kind not in "fc":
        return False
    return not bool(np.isfinite(p.stored).all())


def _rate(p: Prepared) -> float | None:
    """Firing rate of a bits record (its ones over its values), ``None`` for anything else."""
    n = int(np.prod(p.shape, dtype=np.int64))
    if p.encoding != "bits" or n == 0:
        return None
    ones = int(np.bitwise_count(p.stored).sum(dtype=np.int64))  # (padding bits are 0)
    return ones / n


def record_values(p: Prepared) -> np.ndarray:
    """The record's values as a reader returns them (bits unpacked; bfloat16 as float32)."""
    if p.encoding == "bits":
        return unpack_bits(p.stored, p.shape[-1], dtypes.unpacked_dtype(p.dtype).name)
    values = restore_precision(p.stored, p.precision, dtypes.unpacked_dtype(p.dtype))
    if p.dtype == dtypes.BFLOAT16:
        return dtypes.bfloat16_bits_to_float(values, np.dtype(np.float32))
    return values


def fired(rec: FlightRecorder, key: str, step: int, p: Prepared, device_nonfinite: bool | None) -> list[str]:
    """The reasons of the triggers record ``p`` of ``key`` fires, in the order the recorder lists them.

    ``device_nonfinite`` is the device's answer for a CUDA record (``None``:
    check here).

    Raises
    ------
    InvalidArgumentError
        When a callable trigger returns something that is not a reason.
        Whatever a callable raises goes through as it is (it stops the stream).
    """
    reasons: list[str] = []
    rate = _rate(p) if "silent" in rec.triggers or "saturated" in rec.triggers else None
    values: np.ndarray | None = None
    for t in rec.triggers:
        if t == "nonfinite":
            if device_nonfinite if device_nonfinite is not None else is_nonfinite(p):
                reasons.append(t)
        elif t == "silent":
            if rate is not None and rate <= rec.silent_rate:
                reasons.append(t)
        elif t == "saturated":
            if rate is not None and rate >= rec.saturated_rate:
                reasons.append(t)
        elif not isinstance(t, str):
            if values is None:
                values = record_values(p).view()
                values.flags.writeable = False  # (the ring keeps the stored bytes; a trigger only looks)
            got = t(key, values)
            if got is not None:
                reasons.append(check_reason(got, f"trigger {trigger_name(t)} on stream {key!r}, step {step}"))
    return reasons
