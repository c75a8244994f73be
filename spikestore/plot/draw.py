"""The plots' drawing: numpy arrays and steps in, marks on a matplotlib ``Axes`` out.

These functions know nothing of stores: they take the data a plot shows
(arrays, steps, labels) and the axes to draw on, so that anything that holds
such data (the store-level functions of :mod:`spikestore.plot`, a live view
following a run) draws the same figure. Each returns the ``Axes``.

What each mark means is written into the figure itself: the threshold line
and the spike marks of a voltage trace, the markers of steps whose records
hold a smaller batch, each have a legend entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["draw_grad_norms", "draw_raster", "draw_rate_heatmap", "draw_voltage", "mark_short_batches"]

#: The colour and style of the markers at steps whose records hold a smaller batch.
SHORT_BATCH_STYLE: dict[str, Any] = {"color": "tab:red", "linestyle": "--", "linewidth": 1.5, "alpha": 0.9}


def draw_raster(ax: Axes, spikes: np.ndarray, *, time_label: str = "time step", title: str | None = None,
                **scatter_kw: Any) -> Axes:
    """A tick at (time, neuron) for every non-zero value of ``spikes`` (``[time, neurons]``).

    Extra keywords go to ``Axes.scatter`` (``color``, ``s``...).
    """
    t, neuron = np.nonzero(spikes)
    kw: dict[str, Any] = {"marker": "|", "s": 30, "color": "black", "linewidths": 1} | scatter_kw
    ax.scatter(t, neuron, **kw)
    ax.set_xlim(-0.5, spikes.shape[0] - 0.5)
    ax.set_ylim(-0.5, spikes.shape[1] - 0.5)
    ax.set_xlabel(time_label)
    ax.set_ylabel("neuron")
    if title is not None:
        ax.set_title(f"{title} ({len(t)} spikes)")
    return ax


def draw_voltage(ax: Axes, v: np.ndarray, neurons: Sequence[int], *, threshold: float | None = None,
                 spikes: np.ndarray | None = None, spike_label: str = "spike",
                 time_label: str = "time step", ylabel: str = "membrane potential (a.u.)",
                 title: str | None = None) -> Axes:
    """Traces of ``v`` (``[time, neurons]``) for the columns ``neurons``, with the threshold and spikes.

    Parameters
    ----------
    threshold
        Drawn as a dashed horizontal line at that value (``None``: no line).
    spikes
        ``[time, neurons]``, true where a neuron spiked: a star on the
        neuron's trace at each spike, ``spike_label`` in the legend (one
        entry for all neurons, which says so when none of them spiked).
        ``None``: no marks.
    """
    from matplotlib.collections import Collection

    time = np.arange(v.shape[0])
    colors = []
    for k in neurons:
        (line,) = ax.plot(time, v[:, k].astype(np.float64), marker=".", label=f"neuron {k}")
        colors.append(line.get_color())
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold = {threshold}")
    if spikes is not None:
        xs, ys, cs = [], [], []
        for k, color in zip(neurons, colors, strict=True):
            t = np.flatnonzero(spikes[:, k])
            xs.append(t)
            ys.append(v[t, k].astype(np.float64))
            cs += [color] * len(t)
        x, y = np.concatenate(xs) if xs else np.zeros(0), np.concatenate(ys) if ys else np.zeros(0)
        ax.scatter(x, y, marker="*", s=110, c=cs if cs else "white", edgecolors="black", linewidths=0.6,
                   zorder=3, label=spike_label if cs else f"{spike_label}: none in these traces")
    ax.set_xlabel(time_label)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    legend = ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    handle = legend.legend_handles[-1]
    if spikes is not None and isinstance(handle, Collection):  # the legend's star stands for every neuron's
        handle.set_facecolor("white")
    return ax


def mark_short_batches(ax: Axes, steps: Sequence[int] | np.ndarray, *, label: str = "short batch") -> Axes:
    """A dashed vertical line at each of ``steps`` (steps whose records hold a smaller batch: an
    epoch's last), with one legend entry ``label``. Nothing when ``steps`` is empty."""
    for k, step in enumerate(np.asarray(steps).tolist()):
        ax.axvline(step, label=label if k == 0 else "_nolegend_", **SHORT_BATCH_STYLE)
    return ax


def draw_rate_heatmap(ax: Axes, rates: np.ndarray, steps: np.ndarray, layers: Sequence[str], *,
                      short_steps: Sequence[int] | np.ndarray = (), short_label: str = "short batch",
                      title: str | None = None, cmap: str = "viridis") -> Axes:
    """Firing rate ``rates[layer, step]`` as an image (NaN left blank), one row per label of ``layers``.

    ``short_steps`` are marked by :func:`mark_short_batches`, since a smaller
    batch can show as a stripe of its own.
    """
    from matplotlib.ticker import MaxNLocator

    lo, hi = (steps[0], steps[-1]) if len(steps) else (0, 0)
    im = ax.imshow(np.ma.masked_invalid(rates), aspect="auto", cmap=cmap, interpolation="nearest",
                   extent=(lo - 0.5, hi + 0.5, len(layers) - 0.5, -0.5))
    ax.set_yticks(range(len(layers)), list(layers))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("layer (module)")
    if title is not None:
        ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label="spikes / neuron / time step")
    if len(short_steps):
        mark_short_batches(ax, short_steps, label=short_label)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0, -0.18), frameon=False)
    return ax


def draw_grad_norms(ax: Axes, norms: np.ndarray, steps: np.ndarray, layers: Sequence[str], *,
                    short_steps: Sequence[int] | np.ndarray = (), short_label: str = "short batch",
                    ylabel: str = "gradient norm", title: str | None = None, logy: bool = True) -> Axes:
    """One line per layer of ``norms[layer, step]`` over ``steps``; ``short_steps`` marked as in
    :func:`draw_rate_heatmap` (a smaller batch can show as a peak)."""
    from matplotlib.ticker import MaxNLocator

    for k, layer in enumerate(layers):
        ax.plot(steps, norms[k], marker=".", label=layer)
    mark_short_batches(ax, short_steps, label=short_label)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finish_grad_axes(ax, ylabel=ylabel, title=title, logy=logy)
    return ax


def finish_grad_axes(ax: Axes, *, ylabel: str, title: str | None, logy: bool) -> Axes:
    """The y scale, labels and legend of a gradient-norm plot."""
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="best")
    return ax
