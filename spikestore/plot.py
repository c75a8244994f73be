"""Standard plots of a recorded run (matplotlib: ``pip install 'spikestore[plot]'``).

Every function draws into ``ax`` (a new figure when it is ``None``) and
returns the matplotlib ``Axes``, so plots compose and can be restyled. The
numbers come from :mod:`spikestore.analysis` and the stream views, so
nothing is loaded beyond what one plot shows (one record for a raster or a
voltage trace; one chunk at a time for a heatmap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spikestore import analysis
from spikestore.errors import InvalidArgumentError, MissingDependencyError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from spikestore._read.run import Run
    from spikestore._read.stream import Stream

__all__ = ["check_voltage_stream", "firing_rate_heatmap", "grad_norms", "raster", "voltage_traces"]


def _axes(ax: Axes | None, **fig_kw: Any) -> Axes:
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise MissingDependencyError("spikestore.plot needs matplotlib: pip install 'spikestore[plot]'") from None
    axes: Axes = plt.subplots(layout="constrained", **fig_kw)[1]
    return axes


def _sequence(stream: Stream, record: int, sample: int) -> tuple[np.ndarray, int, str]:
    """One sample of one record as ``[time, neurons]``, its step, and what time means.

    Multi-step records carry their own time axis. Single-step records are one
    time step each, so the records of the same step (in ``call`` order) form
    the sequence.
    """
    n = len(stream)
    if n == 0:
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
    t = dims.index("time")
    x = np.moveaxis(x, t, 0)
    return x.reshape(x.shape[0], -1), step, time_label


def raster(stream: Stream, record: int = -1, *, sample: int = 0, ax: Axes | None = None,
           **scatter_kw: Any) -> Axes:
    """Spike raster of one record: a tick at (time step, neuron) for every spike.

    ``sample`` picks the item of the batch. Extra keywords go to
    ``Axes.scatter`` (``color``, ``s``...).
    """
    x, step, time_label = _sequence(stream, record, sample)
    ax = _axes(ax, figsize=(6, 4))
    t, neuron = np.nonzero(x)
    kw: dict[str, Any] = {"marker": "|", "s": 30, "color": "black", "linewidths": 1} | scatter_kw
    ax.scatter(t, neuron, **kw)
    ax.set_xlim(-0.5, x.shape[0] - 0.5)
    ax.set_ylim(-0.5, x.shape[1] - 0.5)
    ax.set_xlabel(time_label)
    ax.set_ylabel("neuron")
    ax.set_title(f"{stream.key}: step {step}, sample {sample} ({len(t)} spikes)")
    return ax


def _holds_spikes(stream: Stream) -> bool:
    """Whether every record of ``stream`` is spikes: only 0s and 1s, so every segment is bit-packed.

    The store packs a record as ``bits`` exactly when all its values are 0
    or 1 (docs/format.md §4), so a stream whose segments are all ``bits``
    never held a value in between, which a membrane potential does.
    """
    return bool(stream.segments) and all(seg.encoding == "bits" for seg in stream.segments)


def _traceable_neighbours(stream: Stream) -> list[str]:
    """The other streams of ``stream``'s layer with records per neuron that are not spikes (``v_seq/1``)."""
    run, found = stream.run, []
    for key in run.streams:
        other = run[key]
        if other.layer == stream.layer and key != stream.key and not _holds_spikes(other) \
                and any(seg.shape for seg in other.segments):
            found.append(key)
    return found


def check_voltage_stream(stream: Stream) -> None:
    """Raise if ``stream`` holds spikes rather than something a voltage trace can show.

    A trace of spikes is a staircase of 0s and 1s that looks like a
    potential and is not one; a raster shows the same data honestly.

    Raises
    ------
    InvalidArgumentError
        If every record of ``stream`` is 0s and 1s; the message names the
        raster plot and the same layer's streams that hold other values.
    """
    if not _holds_spikes(stream):
        return
    hint = ", ".join(_traceable_neighbours(stream))
    hint = f", or plot a stream of the same layer that holds other values per neuron ({hint})" if hint else ""
    raise InvalidArgumentError(
        f"stream {stream.key!r} holds spikes (every record is 0s and 1s, stored as bits), not a voltage; "
        f"draw it as a raster (spikestore.plot.raster, or spikestore plot --kind raster){hint}")


def voltage_traces(stream: Stream, record: int = -1, *, sample: int = 0,
                   neurons: int | Sequence[int] = 5, threshold: float | None = None,
                   ax: Axes | None = None) -> Axes:
    """Membrane potential over time for a few neurons of one record.

    ``neurons`` is how many (the first ones) or which (flat indices).
    ``threshold`` draws the firing threshold as a dashed line. A stream of
    spikes is refused (:func:`check_voltage_stream`): plot it with :func:`raster`.
    """
    check_voltage_stream(stream)
    x, step, time_label = _sequence(stream, record, sample)
    picked = list(range(min(neurons, x.shape[1]))) if isinstance(neurons, (int, np.integer)) else list(neurons)
    ax = _axes(ax, figsize=(6, 3.5))
    for k in picked:
        ax.plot(np.arange(x.shape[0]), x[:, k].astype(np.float64), marker=".", label=f"neuron {k}")
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel(time_label)
    ax.set_ylabel(stream.quantity)
    ax.set_title(f"{stream.key}: step {step}, sample {sample}")
    ax.legend(fontsize="small", loc="best")
    return ax


def firing_rate_heatmap(run: Run, *, quantity: str = "output", ax: Axes | None = None,
                        cmap: str = "viridis") -> Axes:
    """Firing rate of every layer at every step (layer x step), one full pass per stream."""
    rates = analysis.firing_rate(run, per="step", quantity=quantity)
    ax = _axes(ax, figsize=(7, 1.8 + 0.4 * rates.sizes["layer"]))
    steps = rates["step"].values
    lo, hi = (steps[0], steps[-1]) if len(steps) else (0, 0)
    im = ax.imshow(np.ma.masked_invalid(rates.values), aspect="auto", cmap=cmap, interpolation="nearest",
                   extent=(lo - 0.5, hi + 0.5, rates.sizes["layer"] - 0.5, -0.5))
    from matplotlib.ticker import MaxNLocator

    ax.set_yticks(range(rates.sizes["layer"]), [str(v) for v in rates["layer"].values])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("layer")
    ax.set_title(f"firing rate ({quantity})")
    ax.figure.colorbar(im, ax=ax, label="spikes / neuron / time step")
    return ax


def grad_norms(runs: Run | Mapping[Any, Run], *, quantity: str = "grad_input",
               sweep: str | Sequence[Any] | None = None, name: str | None = None,
               ax: Axes | None = None, logy: bool = True) -> Axes:
    """Gradient norm per layer, over steps or over a parameter sweep.

    Parameters
    ----------
    runs
        One run: without ``sweep``, one line per layer over the steps. A
        mapping ``{value: run}`` (one store per value of a swept parameter):
        one line per value over the layers, each run averaged over its steps.
    sweep
        For one run whose steps are the points of a sweep (as in the
        tutorial's surrogate-alpha experiment: step ``k`` used ``alphas[k]``):
        the values, one per step, or the name of the run-metadata key that
        holds them. Draws one line per value over the layers, in network
        order, which shows how the gradient shrinks on its way back.
    name
        The swept parameter's name for the legend (default: ``sweep`` when it
        is a metadata key).
    """
    ax = _axes(ax, figsize=(6, 4))
    if isinstance(runs, Mapping):
        norms = analysis.grad_norms(runs, quantity=quantity, name=name or "value")
        keys, label = list(runs.keys()), name or "value"
        lines: list[tuple[str, np.ndarray]] = [(f"{label}={v}", norms.isel({norms.dims[0]: k}).values)
                                               for k, v in enumerate(keys)]
        layers = [str(v) for v in norms["layer"].values]
    else:
        norms = analysis.grad_norms(runs, quantity=quantity)
        layers = [str(v) for v in norms["layer"].values]
        if sweep is None:
            for k, layer in enumerate(layers):
                ax.plot(norms["step"].values, norms.values[k], marker=".", label=f"layer {layer}")
            ax.set_xlabel("step")
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            return _finish_grad(ax, quantity, logy)
        if isinstance(sweep, str):
            name = name or sweep
            sweep = runs.metadata.get(sweep)
            if not isinstance(sweep, list):
                raise InvalidArgumentError(
                    f"run metadata has no list {name!r}; pass the swept values as sweep=[...]")
        if len(sweep) != norms.sizes["step"]:
            raise InvalidArgumentError(
                f"sweep has {len(sweep)} values but the run has {norms.sizes['step']} steps; "
                "give one value per step")
        lines = [(f"{name or 'value'}={v}", norms.values[:, k]) for k, v in enumerate(sweep)]
    for label, line in lines:
        ax.plot(range(len(layers)), line, marker="o", label=label)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer (network order)")
    return _finish_grad(ax, quantity, logy)


def _finish_grad(ax: Axes, quantity: str, logy: bool) -> Axes:
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(f"‖{quantity}‖")
    ax.set_title(f"gradient norm ({quantity})")
    ax.legend(fontsize="small", loc="best")
    return ax
