"""Plots render with the Agg backend, return their Axes, and the docs carry their images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers import M_SEL, S_SEL
from matplotlib.axes import Axes

import spikestore
from spikestore import InvalidArgumentError, plot

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture
def run(store_path):
    rng = np.random.default_rng(2)
    with spikestore.Store(store_path, mode="w", metadata={"alphas": [0.5, 2.0, 8.0]}) as store:
        for key in ("output/1", "output/3", "v_seq/1"):
            store.set_stream_info(key, selection=M_SEL)
        store.set_stream_info("output/s", selection=S_SEL)
        for step in range(3):
            store.set_step(step)
            for layer in ("1", "3"):
                store.append(f"output/{layer}", (rng.random((5, 4, 16)) < 0.3).astype(np.float32))
            store.append("v_seq/1", rng.standard_normal((5, 4, 16)).astype(np.float32))
            for _t in range(5):
                store.append("output/s", (rng.random((4, 9)) < 0.3).astype(np.float32))
            for layer in ("3", "1"):
                store.append(f"grad_input/{layer}", np.float32(10.0 ** -(step + int(layer))))
    r = spikestore.open(store_path)
    yield r
    r.close()


def _rendered(ax, path: Path) -> None:
    assert isinstance(ax, Axes)
    ax.figure.savefig(path)
    plt.close(ax.figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_each_plot_renders_and_returns_its_axes(run, tmp_path):
    x = run["output/1"][1][:, 2]  # [T, neurons] of sample 2
    ax = plot.raster(run["output/1"], 1, sample=2)
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == x.sum() and set(map(tuple, np.asarray(offsets).astype(int))) == \
        set(zip(*np.nonzero(x), strict=True))
    _rendered(ax, tmp_path / "raster.png")
    _rendered(plot.raster(run["output/s"], 7), tmp_path / "raster_single_step.png")  # records of one step
    ax = plot.firing_rate_heatmap(run)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "3", "s"]
    _rendered(ax, tmp_path / "heat.png")
    ax = plot.grad_norms(run)
    assert len(ax.lines) == 2 and ax.get_yscale() == "log"
    _rendered(ax, tmp_path / "grad.png")
    ax = plot.grad_norms(run, sweep="alphas", name="alpha")
    assert [ln.get_label() for ln in ax.lines] == ["alpha=0.5", "alpha=2.0", "alpha=8.0"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1e-1, 1e-3], rtol=1e-6)  # network order: 1, 3
    _rendered(ax, tmp_path / "sweep.png")
    _rendered(plot.grad_norms({"a": run, "b": run}), tmp_path / "runs.png")
    ax = plot.voltage_traces(run["v_seq/1"], -1, neurons=[0, 3], threshold=1.0)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), run["v_seq/1"][-1][:, 0, 3])
    _rendered(ax, tmp_path / "volt.png")
    fig, axes = plt.subplots(1, 2)
    assert plot.raster(run["output/3"], ax=axes[1]) is axes[1]
    plt.close(fig)


def test_plot_errors_say_what_to_do(run):
    with pytest.raises(InvalidArgumentError, match="sample 9 is out of range"):
        plot.raster(run["output/1"], sample=9)
    with pytest.raises(InvalidArgumentError, match="one value per step"):
        plot.grad_norms(run, sweep=[1, 2])


def test_a_voltage_trace_of_spikes_is_refused_and_names_the_raster(run):
    for key in ("output/1", "output/s"):
        with pytest.raises(InvalidArgumentError, match=rf"{key!r} holds spikes.*raster"):
            plot.voltage_traces(run[key])
    with pytest.raises(InvalidArgumentError, match=r"other values per neuron \(v_seq/1\)"):
        plot.voltage_traces(run["output/1"])
    plt.close("all")


def test_the_docs_show_the_images():
    guide = (DOCS / "reading.md").read_text()
    for name in ("raster", "firing_rate_heatmap", "grad_norms", "grad_norms_alpha", "voltage_traces"):
        png = DOCS / "images" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"images/{name}.png" in guide
