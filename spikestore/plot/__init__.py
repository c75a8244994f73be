"""Standard plots of a recorded run (matplotlib: ``pip install 'spikestore[plot]'``).

Every function draws into ``ax`` (a new figure when it is ``None``) and
returns the matplotlib ``Axes``, so plots compose and can be restyled. The
numbers come from :mod:`spikestore.analysis` and the stream views, so
nothing is loaded beyond what one plot shows (one record for a raster or a
voltage trace; one chunk at a time for a heatmap). The drawing itself is
:mod:`spikestore.plot.draw`'s, which takes arrays and steps: a live view
draws the same figures from the data it holds.

What the plots choose and mark (:mod:`spikestore.plot._picks`): a record
with the full batch unless one is named; steps whose records hold a smaller
batch; layers by module name; a voltage trace's threshold and spikes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spikestore import analysis
from spikestore.errors import InvalidArgumentError, MissingDependencyError
from spikestore.plot import draw
from spikestore.plot._picks import (
    full_batch_record,
    holds_spikes,
    layer_label,
    matching_spikes,
    one_sequence,
    short_batch_steps,
    value_label,
    voltage_streams,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from spikestore._read.run import Run
    from spikestore._read.stream import Stream

__all__ = ["DEFAULT_THRESHOLD", "check_voltage_stream", "draw", "firing_rate_heatmap", "full_batch_record",
           "grad_norms", "layer_label", "raster", "short_batch_steps", "voltage_streams", "voltage_traces"]

#: The threshold a voltage trace draws unless told otherwise: SpikingJelly's ``v_threshold`` default.
DEFAULT_THRESHOLD = 1.0


def _axes(ax: Axes | None, **fig_kw: Any) -> Axes:
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise MissingDependencyError("spikestore.plot needs matplotlib: pip install 'spikestore[plot]'") from None
    axes: Axes = plt.subplots(layout="constrained", **fig_kw)[1]
    return axes


def _title(stream: Stream, step: int, sample: int) -> str:
    return f"{stream.key} · module {layer_label(stream.run, stream.layer)} · step {step}, sample {sample}"


def raster(stream: Stream, record: int | None = None, *, sample: int = 0, ax: Axes | None = None,
           **scatter_kw: Any) -> Axes:
    """Spike raster of one record: a tick at (time step, neuron) for every spike.

    ``record`` defaults to the last record with the full batch
    (:func:`full_batch_record`), not an epoch's smaller last batch.
    ``sample`` picks the item of the batch. Extra keywords go to
    ``Axes.scatter`` (``color``, ``s``...).
    """
    record = full_batch_record(stream) if record is None else record
    x, step, time_label = one_sequence(stream, record, sample)
    return draw.draw_raster(_axes(ax, figsize=(6, 4)), x, time_label=time_label,
                            title=_title(stream, step, sample), **scatter_kw)


def _traceable_neighbours(stream: Stream) -> list[str]:
    """The other streams of ``stream``'s layer with records per neuron that are not spikes (``v_seq/1``)."""
    run, found = stream.run, []
    for key in run.streams:
        other = run[key]
        if other.layer == stream.layer and key != stream.key and not holds_spikes(other) \
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
    if not holds_spikes(stream):
        return
    hint = ", ".join(_traceable_neighbours(stream))
    hint = f", or plot a stream of the same layer that holds other values per neuron ({hint})" if hint else ""
    raise InvalidArgumentError(
        f"stream {stream.key!r} holds spikes (every record is 0s and 1s, stored as bits), not a voltage; "
        f"draw it as a raster (spikestore.plot.raster, or spikestore plot --kind raster){hint}")


def voltage_traces(stream: Stream, record: int | None = None, *, sample: int = 0,
                   neurons: int | Sequence[int] = 5, threshold: float | None = DEFAULT_THRESHOLD,
                   spikes: bool = True, ax: Axes | None = None) -> Axes:
    """Membrane potential over time for a few neurons of one record, with the threshold and the spikes.

    Parameters
    ----------
    record
        Default: the last record with the full batch (:func:`full_batch_record`).
    neurons
        How many (the first ones) or which (flat indices).
    threshold
        Drawn as a dashed line (``None``: none). The store does not keep
        the neurons' threshold: 1.0 is SpikingJelly's default ``v_threshold``;
        give the network's own.
    spikes
        Mark each spike with a star on its neuron's trace. The spikes are
        those of the layer's ``output/<layer>`` stream at the same step when
        the store has it and its record covers the same neurons (exact).
        Otherwise they are inferred as the points at or above ``threshold``,
        and the legend says so. SpikingJelly's
        ``v_seq`` holds the potential after the reset, so a spike shows as a
        drop to the reset value, not as a crossing.

    A stream of spikes is refused (:func:`check_voltage_stream`): plot it with :func:`raster`.
    The y label names the units when the stream's attrs carry ``"units"``, else arbitrary units.
    """
    check_voltage_stream(stream)
    record = full_batch_record(stream) if record is None else record
    x, step, time_label = one_sequence(stream, record, sample)
    picked = list(range(min(neurons, x.shape[1]))) if isinstance(neurons, (int, np.integer)) else list(neurons)
    marks: np.ndarray | None = None
    label = "spike"
    if spikes:
        found = matching_spikes(stream, record, sample, x.shape)
        if found is not None:
            marks, label = found[0], f"spike ({found[1]})"
        elif threshold is not None:
            marks, label = x >= threshold, f"v ≥ threshold (inferred: no matching output/{stream.layer})"
    return draw.draw_voltage(_axes(ax, figsize=(7.5, 3.5)), x, picked, threshold=threshold, spikes=marks,
                             spike_label=label, time_label=time_label, ylabel=value_label(stream),
                             title=_title(stream, step, sample))


def firing_rate_heatmap(run: Run, *, quantity: str = "output", ax: Axes | None = None,
                        cmap: str = "viridis") -> Axes:
    """Firing rate of every layer at every step (layer x step), one full pass per stream.

    Rows are labelled by module name (:func:`layer_label`); steps whose
    records hold a smaller batch (:func:`short_batch_steps`) are marked.
    """
    rates = analysis.firing_rate(run, per="step", quantity=quantity)
    ax = _axes(ax, figsize=(7, 2.2 + 0.4 * rates.sizes["layer"]))
    return draw.draw_rate_heatmap(ax, rates.values, rates["step"].values,
                                  [layer_label(run, str(v)) for v in rates["layer"].values],
                                  short_steps=short_batch_steps(run, quantity), title=f"firing rate ({quantity})",
                                  cmap=cmap)


def grad_norms(runs: Run | Mapping[Any, Run], *, quantity: str = "grad_input",
               sweep: str | Sequence[Any] | None = None, name: str | None = None,
               ax: Axes | None = None, logy: bool = True) -> Axes:
    """Gradient norm per layer, over steps or over a parameter sweep.

    Parameters
    ----------
    runs
        One run: without ``sweep``, one line per layer (labelled by module
        name, :func:`layer_label`) over the steps, with the steps whose
        records hold a smaller batch marked (:func:`short_batch_steps`). A
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
    title, ylabel = f"gradient norm ({quantity})", f"‖{quantity}‖"
    if isinstance(runs, Mapping):
        norms = analysis.grad_norms(runs, quantity=quantity, name=name or "value")
        keys, label = list(runs.keys()), name or "value"
        lines: list[tuple[str, np.ndarray]] = [(f"{label}={v}", norms.isel({norms.dims[0]: k}).values)
                                               for k, v in enumerate(keys)]
        first = next(iter(runs.values()), None)
        layers = [layer_label(first, str(v)) if first is not None else str(v) for v in norms["layer"].values]
    else:
        norms = analysis.grad_norms(runs, quantity=quantity)
        layers = [layer_label(runs, str(v)) for v in norms["layer"].values]
        if sweep is None:
            return draw.draw_grad_norms(ax, norms.values, norms["step"].values, layers,
                                        short_steps=short_batch_steps(runs), ylabel=ylabel, title=title,
                                        logy=logy)
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
    ax.set_xlabel("layer (module, network order)")
    return draw.finish_grad_axes(ax, ylabel=ylabel, title=title, logy=logy)
