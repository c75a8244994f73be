"""What a plot of a store shows: which record, which steps to mark, which labels, which spikes.

Each choice reads only what the store keeps (segment shapes, the index
arrays, stream attributes, run metadata), so it costs no record data except
where it says so (:func:`one_sequence`, :func:`matching_spikes`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from spikestore._read.padded import segment_batch_sizes
from spikestore.errors import InvalidArgumentError

if TYPE_CHECKING:
    from spikestore._read.run import Run
    from spikestore._read.stream import Stream, StreamOwner

__all__ = ["VOLTAGE_QUANTITIES", "full_batch_record", "holds_spikes", "layer_label", "matching_spikes",
           "one_sequence", "short_batch_steps", "value_label", "voltage_streams"]

#: Quantities that hold a membrane potential: SpikingJelly's ``v_seq`` (multi-step) and ``v`` (single-step).
VOLTAGE_QUANTITIES = ("v_seq", "v")


def holds_spikes(stream: Stream) -> bool:
    """Whether every record of ``stream`` is spikes: only 0s and 1s, so every segment is bit-packed.

    The store packs a record as ``bits`` exactly when all its values are 0
    or 1 (docs/format.md §4), so a stream whose segments are all ``bits``
    never held a value in between, which a membrane potential does.
    """
    return bool(stream.segments) and all(seg.encoding == "bits" for seg in stream.segments)


def voltage_streams(run: StreamOwner) -> list[str]:
    """The streams of ``run`` that hold membrane potentials (``v_seq/*``, then ``v/*``), spikes left out."""
    keys = [k for q in VOLTAGE_QUANTITIES for k in run.streams if k.split("/", 1)[0] == q]
    return [k for k in keys if not holds_spikes(run[k])]


def full_batch_record(stream: Stream) -> int:
    """The last record whose batch is the stream's full (largest) batch; the last record when records
    have no batch axis.

    An epoch's last batch is often smaller; a raster of it shows fewer
    samples than the run trained on, so plots pick a full one by default.
    """
    if len(stream) == 0:
        raise InvalidArgumentError(f"stream {stream.key!r} has no records yet; nothing to plot")
    sizes = stream.batch_sizes
    if sizes is None:
        return len(stream) - 1
    return int(np.flatnonzero(sizes == sizes.max())[-1])


def short_batch_steps(run: StreamOwner, quantity: str | None = None) -> np.ndarray:
    """Steps at which some stream (of ``quantity``, or any) has a record with a smaller batch than its largest.

    These are usually the last steps of epochs (a data set that the batch
    size does not divide); a rate or a gradient norm over fewer samples can
    show there as a stripe or a peak. Reads segment shapes, and the steps of
    the records of smaller segments only (cheap for a long, growing run).
    """
    found: list[np.ndarray] = []
    for key in run.streams:
        if quantity is not None and key.split("/", 1)[0] != quantity:
            continue
        stream = run[key]
        sizes = segment_batch_sizes(stream)
        if sizes is None:
            continue
        largest = max(sizes, default=0)
        for seg, size in zip(stream.segments, sizes, strict=True):
            if size < largest and seg.stop > seg.start:
                at = stream.record_positions(seg)
                lo = int(at.min())
                found.append(stream.index("step", lo, int(at.max()) + 1)[at - lo])
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def _module_classes(text: str) -> dict[str, str]:
    """Module name (as ``named_modules()`` gives it) -> class name, from a module's ``str(net)``."""
    classes: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, name) of the enclosing modules
    for line in text.splitlines():
        m = re.match(r"^( *)\(([^()\s]*)\): ([A-Za-z_]\w*)\(", line)
        if m is None:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        classes[".".join(name for _, name in stack)] = m.group(3)
    return classes


def layer_label(run: Run | StreamOwner, layer: str) -> str:
    """A layer's label: its module name (the layer key), with the module's class where the store has it.

    Monitors name a stream's layer by the module's name in
    ``net.named_modules()`` (``"2"`` in an ``nn.Sequential``,
    ``"features.lif1"`` deeper down). The class comes from the run metadata
    ``"network"`` when it holds the network's ``str(net)`` (as
    ``tools/demo.py`` writes it): ``"2 (LIFNode)"``. The root module's empty
    name reads ``"(root)"``.
    """
    name = layer if layer else "(root)"
    metadata: Any = getattr(run, "metadata", None)
    text = metadata.get("network") if isinstance(metadata, dict) else None
    cls = _module_classes(text).get(layer) if isinstance(text, str) and layer else None
    return f"{name} ({cls})" if cls else name


def value_label(stream: Stream) -> str:
    """The y label of a trace of ``stream``: what it holds and its units.

    The units are the stream attribute ``"units"`` (or ``"unit"``) when the
    recording set one (``Store.set_stream_info(key, attrs={"units": "mV"})``),
    else arbitrary units: a simulated potential has the units of the model.
    """
    units = stream.attrs.get("units", stream.attrs.get("unit"))
    what = "membrane potential" if stream.quantity in VOLTAGE_QUANTITIES else stream.quantity
    return f"{what} ({units if isinstance(units, str) and units else 'a.u.'})"


def one_sequence(stream: Stream, record: int, sample: int) -> tuple[np.ndarray, int, str]:
    """One sample of one record as ``[time, neurons]``, its step, and what time means.

    Multi-step records carry their own time axis. Single-step records are one
    time step each, so the records of the same step (in ``call`` order) form
    the sequence.
    """
    if len(stream) == 0:
        raise InvalidArgumentError(f"stream {stream.key!r} has no records yet; nothing to plot")
    dims, step = stream.segment_of(record).dims, int(stream.steps[record])
    if "time" in dims:
        x, time_label = stream[record], "time step"
    else:
        x = stream.sel(step=[step])
        dims, time_label = ("time", *dims), "call (time step within the step)"
    if "batch" in dims:
        b = dims.index("batch")
        if not -x.shape[b] <= sample < x.shape[b]:
            raise InvalidArgumentError(
                f"stream {stream.key!r}: sample {sample} is out of range for a batch of {x.shape[b]}")
        x, dims = np.take(x, sample, axis=b), tuple(d for d in dims if d != "batch")
    x = np.moveaxis(x, dims.index("time"), 0)
    return x.reshape(x.shape[0], -1), step, time_label


def matching_spikes(stream: Stream, record: int, sample: int, shape: tuple[int, ...]) -> tuple[np.ndarray, str] | None:
    """The spikes of ``stream``'s layer at the same record, as ``[time, neurons]`` of ``shape``, and their key.

    The matching stream is ``output/<layer>`` (what an ``OutputMonitor``
    records from the same neuron layer); its record is the one of the same
    step, call and rank. ``None`` when there is no such stream, it does not
    hold spikes, or its record covers other neurons (another selection).
    """
    key = f"output/{stream.layer}"
    if key == stream.key or key not in stream.run.streams:
        return None
    out = stream.run[key]
    if not holds_spikes(out):
        return None
    i = record % len(stream)
    same = np.flatnonzero((out.steps == stream.steps[i]) & (out.calls == stream.calls[i])
                          & (out.ranks == stream.ranks[i]))
    if len(same) == 0:
        return None
    try:
        spikes = one_sequence(out, int(same[0]), sample)[0]
    except InvalidArgumentError:
        return None
    return (spikes != 0, key) if spikes.shape == shape else None
