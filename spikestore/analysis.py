"""Spike and gradient statistics, computed one stored chunk at a time.

Every function here makes one pass over the stored chunks of a stream and
keeps at most ``max_elements`` decoded values alive (default 16 Mi), so it
runs in bounded memory on streams far larger than RAM. Results are small:
numpy arrays, or ``xarray.DataArray`` where a labelled axis (step, layer)
helps.

Spikes are the non-zero values of a stream. Bit-packed segments (every
binary record) are counted straight from their packed bytes with a
popcount, without unpacking to float32, which is where the speed of a full
scan comes from.

Passes walk a stream with the read side's one chunk iterator
(:meth:`Segment.blocks <spikestore._read.segment.Segment.blocks>`), bounded by ``max_elements``.
Each pass is one function per block (:mod:`spikestore._tools.block_stats`),
with small results combined by the caller
(:func:`spikestore._integrations.distributed.map_blocks`): with a
``dask.distributed`` client active, the blocks are tasks on its workers,
each opening the store itself; without one, they run here, one after the
other. The answers are the same either way (counts are integers; rates
divide the same integers; per-block floats are computed by the same code).

A stream of a run recorded by several ranks is analysed the same way: a
pass walks the blocks of every segment of every part (:attr:`Stream.segments
<spikestore.Stream.segments>`), and per-record results land at the stream
positions of their records (:meth:`Stream.record_positions
<spikestore.Stream.record_positions>`). Sequences never cross ranks: each
rank's records are its own samples.

Axis names come from :attr:`spikestore.Stream.dims`: records of a
multi-step SpikingJelly layer are ``(time, batch, neuron...)`` and of a
single-step layer ``(batch, neuron...)``. "Per neuron" keeps every axis
that is not ``time`` or ``batch``; set ``stream.dims`` for records appended
by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from spikestore._integrations.dask_views import record_coords
from spikestore._integrations.distributed import map_blocks
from spikestore._read.segment import Block
from spikestore._tools import block_stats as bs
from spikestore.errors import InvalidArgumentError, MissingDependencyError

if TYPE_CHECKING:
    import xarray as xr

    from spikestore._read.run import Run
    from spikestore._read.stream import Stream

__all__ = [
    "MAX_ELEMENTS",
    "firing_rate",
    "grad_norms",
    "inter_spike_intervals",
    "population_rate",
    "spike_counts",
]

#: Default bound on decoded values held at once by one function call.
MAX_ELEMENTS = 1 << 24


def _need_xarray() -> None:
    """Raise ``MissingDependencyError`` unless xarray can be imported (results are DataArrays)."""
    try:
        import xarray  # noqa: F401  (imported to check that it is installed)
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise MissingDependencyError("this result is an xarray.DataArray: pip install 'spikestore[xarray]'") from None


def _blocks(stream: Stream, max_elements: int) -> list[Block]:
    """Every record of ``stream``, segment by segment, part by part, in blocks of at most ``max_elements`` values.

    A block never crosses a stored chunk; its ``start:stop`` are positions in
    its segment's part, and its stored rows (``block.rows()``) are still
    packed for bits segments. Nothing is read to list them.
    """
    if max_elements < 1:
        raise InvalidArgumentError(f"max_elements must be >= 1, not {max_elements!r}")
    return [b for seg in stream.segments for b in seg.blocks(max_values=max_elements)]


def _run(fn: Callable[..., Any], blocks: list[Block], args: list[tuple[Any, ...]] | None = None,
         *, name: str) -> list[Any]:
    """``fn(block, *args[i])`` for every block, in one :func:`map_blocks` call (one round on a cluster)."""
    return map_blocks(fn, blocks, args, name=name)


def _positions(stream: Stream, block: Block) -> np.ndarray:
    """The stream positions of the records of ``block``."""
    return stream.record_positions(block.segment, block.start, block.stop)


def _per_record_array(stream: Stream, blocks: list[Block], values: list[Any],
                      width: tuple[int, ...] = (), dtype: Any = np.float64) -> np.ndarray:
    """``values[i]`` (one row per record of block ``i``) as one array in ``stream``'s record order."""
    out = np.zeros((len(stream), *width), dtype)
    for block, got in zip(blocks, values, strict=True):
        out[_positions(stream, block)] = got
    return out


def _by_step(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``values`` over the records of each distinct step."""
    uniq, inv = np.unique(steps, return_inverse=True)
    return uniq, np.bincount(inv, weights=values, minlength=len(uniq))


def _per_record(stream: Stream, max_elements: int) -> tuple[np.ndarray, np.ndarray]:
    """Spike count and number of values of every record."""
    blocks = _blocks(stream, max_elements)
    counts = _per_record_array(stream, blocks, _run(bs.block_counts, blocks, name="spikestore-counts"),
                               dtype=np.int64)
    sizes = _per_record_array(stream, blocks, [b.segment.values_per_record for b in blocks], dtype=np.int64)
    return counts, sizes


def _per_neuron(stream: Stream, max_elements: int) -> tuple[np.ndarray, int]:
    """Spikes of every neuron summed over records, time and batch, and the number of samples."""
    total: np.ndarray | None = None
    samples = 0
    blocks = _blocks(stream, max_elements)
    axes = [bs.neuron_axes(b.segment)[0] for b in blocks]  # here: they follow the caller's stream.dims
    per_block = _run(bs.block_neuron_counts, blocks, [(a,) for a in axes], name="spikestore-neuron-counts")
    for block, sample, counts in zip(blocks, axes, per_block, strict=True):
        seg = block.segment
        if total is None:
            total = counts
        elif total.shape != counts.shape:
            raise InvalidArgumentError(
                f"stream {stream.key!r}: the neuron axes differ between segments ({total.shape} vs "
                f"{counts.shape}); per-neuron results need one layout (set stream.dims, or use per='step')")
        else:
            total += counts
        samples += len(block) * int(np.prod([seg.shape[i - 1] for i in sample], dtype=np.int64))
    if total is None:
        raise InvalidArgumentError(f"stream {stream.key!r} has no records yet; nothing to compute per neuron")
    return total, samples


def _step_array(stream: Stream, steps: np.ndarray, values: np.ndarray, name: str) -> xr.DataArray:
    _need_xarray()
    import xarray as xr

    return xr.DataArray(values, dims=("step",), coords={"step": steps}, name=name, attrs={"stream": stream.key})


def spike_counts(stream: Stream, per: str = "record", *,
                 max_elements: int = MAX_ELEMENTS) -> np.ndarray | xr.DataArray:
    """Number of spikes (non-zero values).

    Parameters
    ----------
    per
        ``"record"``: int64 array, one count per record. ``"step"``: a
        DataArray over ``step`` (records of one step summed). ``"neuron"``:
        int64 array of the neuron axes, summed over records, time and batch.
    """
    if per == "neuron":
        return _per_neuron(stream, max_elements)[0]
    counts, _ = _per_record(stream, max_elements)
    if per == "record":
        return counts
    if per == "step":
        steps, sums = _by_step(stream.steps, counts.astype(np.float64))
        return _step_array(stream, steps, sums.round().astype(np.int64), "spike_count")
    raise InvalidArgumentError(f"per must be 'record', 'step' or 'neuron', not {per!r}")


def _layer_streams(run: Run, quantity: str) -> list[Stream]:
    streams = [run[k] for k in run.streams if run[k].quantity == quantity]
    if not streams:
        raise InvalidArgumentError(
            f"{run.path} has no {quantity!r} streams; its quantities are {', '.join(run.quantities) or 'none'}")
    return streams


@overload
def firing_rate(obj: Run, per: str = ..., *, quantity: str = ..., max_elements: int = ...) -> xr.DataArray: ...


@overload
def firing_rate(obj: Stream, per: str = ..., *, quantity: str = ...,
                max_elements: int = ...) -> np.ndarray | float | xr.DataArray: ...


def firing_rate(obj: Run | Stream, per: str = "neuron", *, quantity: str = "output",
                max_elements: int = MAX_ELEMENTS) -> np.ndarray | float | xr.DataArray:
    """Fraction of values that are spikes (spikes per neuron per time step).

    Parameters
    ----------
    obj
        A stream, or a run for ``per="layer"`` / ``per="step"`` over every
        stream of ``quantity``.
    per
        For a stream: ``"neuron"`` (array of the neuron axes, averaged over
        records, time and batch), ``"record"`` (array, one rate per record),
        ``"step"`` (DataArray over ``step``) or ``"all"`` (one float).
        For a run: ``"layer"`` (DataArray over ``layer``) or ``"step"``
        (DataArray ``layer x step``, NaN where a layer has no record at a
        step: the data of a firing-rate heatmap).
    """
    from spikestore._read.run import Run

    if isinstance(obj, Run):
        _need_xarray()
        import xarray as xr

        streams = _layer_streams(obj, quantity)
        layers = [s.layer for s in streams]
        if per == "layer":
            rates = [_rate_all(s, max_elements) for s in streams]
            return xr.DataArray(np.array(rates, dtype=np.float64), dims=("layer",),
                                coords={"layer": layers}, name="firing_rate", attrs={"quantity": quantity})
        if per == "step":
            series = [_rate_by_step(s, max_elements) for s in streams]
            out = xr.concat(series, dim=xr.DataArray(layers, dims="layer", name="layer"), join="outer",
                            coords="minimal", compat="override", combine_attrs="drop")
            return out.rename("firing_rate").assign_attrs(quantity=quantity)
        raise InvalidArgumentError(f"for a run, per must be 'layer' or 'step', not {per!r}; "
                                   "use run[key] for per-neuron or per-record rates")
    if per == "neuron":
        counts, samples = _per_neuron(obj, max_elements)
        return np.asarray(counts / samples)
    if per == "record":
        counts, sizes = _per_record(obj, max_elements)
        return np.asarray(counts / np.maximum(sizes, 1))
    if per == "all":
        return _rate_all(obj, max_elements)
    if per == "step":
        return _rate_by_step(obj, max_elements)
    raise InvalidArgumentError(f"per must be 'neuron', 'record', 'step' or 'all', not {per!r}")


def _rate_all(stream: Stream, max_elements: int) -> float:
    """The firing rate of every value of ``stream``."""
    counts, sizes = _per_record(stream, max_elements)
    return float(counts.sum() / sizes.sum()) if sizes.sum() else float("nan")


def _rate_by_step(stream: Stream, max_elements: int) -> xr.DataArray:
    """The firing rate of the values of each step of ``stream``."""
    counts, sizes = _per_record(stream, max_elements)
    steps, spikes = _by_step(stream.steps, counts.astype(np.float64))
    _, values = _by_step(stream.steps, sizes.astype(np.float64))
    return _step_array(stream, steps, spikes / np.maximum(values, 1), "firing_rate")


def population_rate(stream: Stream, *, max_elements: int = MAX_ELEMENTS) -> xr.DataArray:
    """Fraction of the population spiking at each time step of each record.

    Multi-step records ``(time, batch, neuron...)`` give a DataArray
    ``record x time`` (averaged over batch and neurons). Records without a
    ``time`` axis (single-step mode: each record is one time step) give one
    value per record; ``call`` and ``step`` coordinates place it in time
    (and ``rank`` says which rank recorded it).
    """
    _need_xarray()
    import xarray as xr

    n = len(stream)
    segments = stream.segments
    with_time = [seg for seg in segments if "time" in seg.dims]
    if with_time and len(with_time) == len(segments):
        lengths = {seg.shape[seg.dims.index("time")] for seg in with_time}
        if len(lengths) > 1:
            raise InvalidArgumentError(f"stream {stream.key!r}: segments have different time lengths {lengths}")
        width = lengths.pop()
        blocks = _blocks(stream, max_elements)
        axes = [(1 + b.segment.dims.index("time"),) for b in blocks]
        rates = _run(bs.block_population, blocks, axes, name="spikestore-population")
        dims: tuple[str, ...] = ("record", "time")
        out = _per_record_array(stream, blocks, rates, (width,))
    else:
        counts, sizes = _per_record(stream, max_elements)
        out, dims = counts / np.maximum(sizes, 1), ("record",)
    every = np.arange(n)
    coords: dict[str, Any] = {"record": every}
    coords.update({k: ("record", v) for k, v in record_coords(stream, every).items() if k != "batch_size"})
    return xr.DataArray(out, dims=dims, name="population_rate", attrs={"stream": stream.key}, coords=coords)


def inter_spike_intervals(stream: Stream, *, max_elements: int = MAX_ELEMENTS) -> xr.DataArray:
    """Histogram of inter-spike intervals, in time steps, over every neuron and sample.

    With a ``time`` axis, intervals are measured inside each record (each
    record is one sequence of ``T`` steps, so intervals run 1..T-1). Without
    one (single-step mode), the records of one step form the sequence, in
    ``call`` order, and a new step starts afresh (each rank's records on
    their own, for a run of several ranks). Returns a DataArray of
    counts over ``interval`` (1, 2, ...); a histogram rather than the list of
    intervals keeps memory bounded however many spikes there are.
    """
    _need_xarray()
    import xarray as xr

    blocks = _blocks(stream, max_elements)
    steps, calls = stream.steps, stream.calls
    args = [(1 + b.segment.dims.index("time"),) if "time" in b.segment.dims else
            (None, steps[_positions(stream, b)], calls[_positions(stream, b)]) for b in blocks]
    hist = np.zeros(0, np.int64)
    carry_step, carry = None, None  # the last spike of each neuron in the step the last block ended in
    previous = None
    for block, got in zip(blocks, _run(bs.block_isi, blocks, args, name="spikestore-isi"), strict=True):
        if block.segment.rank != previous:  # another rank: its records are other samples, no sequence crosses
            carry_step, carry, previous = None, None, block.segment.rank
        hist = bs.add_hist(hist, got.hist)
        if got.first is None:  # (intervals inside records of T steps: nothing crosses blocks)
            continue
        if carry is not None and got.first_step == carry_step and len(carry) == len(got.first):
            seen = (carry >= 0) & (got.first >= 0)
            hist = bs.add_hist(hist, np.bincount(got.first[seen] - carry[seen]))
            if got.one_step:  # the step goes on past this block
                carry = np.where(got.last >= 0, got.last, carry)
                continue
        carry_step, carry = got.last_step, got.last
    hist = hist[1:] if len(hist) > 1 else np.zeros(0, np.int64)
    return xr.DataArray(hist, dims=("interval",), coords={"interval": np.arange(1, len(hist) + 1)},
                        name="isi_count", attrs={"stream": stream.key})


def _record_norms(stream: Stream, max_elements: int) -> np.ndarray:
    """L2 norm of every record (a scalar record is its own absolute value)."""
    blocks = _blocks(stream, max_elements)
    return _per_record_array(stream, blocks, _run(bs.block_norms, blocks, name="spikestore-norms"))


def _forward_layers(run: Run, layers: list[str]) -> list[str]:
    """Layers in network order: as in the forward-hook streams when they list them all,
    else reversed (backward hooks fire from the last layer to the first)."""
    forward = [s.split("/", 1)[1] for s in run.streams if not s.startswith("grad_")]
    order = list(dict.fromkeys(x for x in forward if x in layers))
    return order if set(order) == set(layers) else layers[::-1]


def grad_norms(obj: Run | Mapping[Any, Run], *, quantity: str = "grad_input", name: str = "run",
               max_elements: int = MAX_ELEMENTS) -> xr.DataArray:
    """Gradient norm per layer and step (``layer x step``), layers in network order.

    Records are reduced to their L2 norm (records already reduced with
    ``function_on_grad_input=torch.norm`` are scalars and kept as they are);
    several records in one step combine as the norm of all of them together,
    ``sqrt(sum of squares)``. NaN where a layer has no record at a step.

    A mapping ``{value: run}`` (a parameter sweep over several stores)
    gives ``name x layer`` instead: each run's per-step norms averaged over
    its steps.
    """
    _need_xarray()
    import xarray as xr

    if isinstance(obj, Mapping):
        per_run = [grad_norms(r, quantity=quantity, max_elements=max_elements).mean("step") for r in obj.values()]
        out = xr.concat(per_run, dim=xr.DataArray(list(obj.keys()), dims=name, name=name), join="outer")
        return out.rename("grad_norm")
    streams = {s.layer: s for s in _layer_streams(obj, quantity)}
    series = []
    for layer in _forward_layers(obj, list(streams)):
        s = streams[layer]
        steps, squares = _by_step(s.steps, _record_norms(s, max_elements) ** 2)
        series.append(xr.DataArray(np.sqrt(squares), dims=("step",), coords={"step": steps}))
    layers = xr.DataArray(_forward_layers(obj, list(streams)), dims="layer", name="layer")
    return xr.concat(series, dim=layers, join="outer").rename("grad_norm").assign_attrs(quantity=quantity)
