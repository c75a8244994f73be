"""Plots render with the Agg backend, return their Axes, and the docs carry their images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# -- what the plots show: threshold, spikes, full batches, short batches, module names, the CLI's choices ----

#: ``str(net)`` of a network whose LIF layers are ``1`` and ``block.lif``, as ``tools/demo.py`` stores it.
NETWORK = """Sequential(
  (0): Linear(in_features=6, out_features=6, bias=True)
  (1): LIFNode(
    v_threshold=1.0, v_reset=0.0, detach_reset=False, step_mode=m, backend=torch, tau=2.0
    (surrogate_function): ATan(alpha=2.0, spiking=True)
  )
  (block): Sequential(
    (lif): LIFNode(v_threshold=1.0)
  )
)"""
BATCHES = [4, 4, 2, 4, 2]  # two epochs end with a smaller batch: steps 2 and 4


def _lif(x: np.ndarray, threshold: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A LIF layer's spikes and its potential after the reset (what SpikingJelly's ``v_seq`` holds)."""
    v, vs, spikes = np.zeros(x.shape[1:], np.float32), [], []
    for t in range(x.shape[0]):
        v = v + (x[t] - v) / 2
        s = (v >= threshold).astype(np.float32)
        v = v * (1 - s)
        vs.append(v.copy())
        spikes.append(s)
    return np.stack(spikes), np.stack(vs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Five steps of two LIF layers (outputs, potentials, gradient norms) with short batches at steps 2 and 4."""
    path = tmp_path_factory.mktemp("trained") / "run.zarr"
    rng = np.random.default_rng(5)
    with spikestore.Store(path, mode="w", metadata={"network": NETWORK}) as store:
        for key in ("output/1", "v_seq/1", "output/block.lif", "v_seq/lonely"):
            store.set_stream_info(key, selection=M_SEL)
        store.set_stream_info("v_seq/block.lif", selection=M_SEL, attrs={"units": "mV"})
        for step, batch in enumerate(BATCHES):
            store.set_step(step)
            for layer in ("1", "block.lif"):
                spikes, v = _lif(rng.uniform(0, 3.0, (6, batch, 7)).astype(np.float32))
                store.append(f"output/{layer}", spikes)
                store.append(f"v_seq/{layer}", v)
                store.append(f"grad_input/{layer}", np.float32(rng.uniform(1, 2) * (5 if batch < 4 else 1)))
            store.append("v_seq/lonely", rng.uniform(0, 1.5, (6, batch, 7)).astype(np.float32))
    r = spikestore.open(path)
    yield r
    r.close()
    plt.close("all")


def _legend(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def _vlines(ax) -> list[float]:
    """x of the vertical lines drawn across the axes (``axvline``: two equal x in axes-fraction y)."""
    return [float(ln.get_xdata()[0]) for ln in ax.lines
            if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1] and ln.get_ydata() == [0, 1]]


def test_a_voltage_trace_draws_the_threshold_the_spikes_of_its_layer_and_units(trained):
    s, out = trained["v_seq/1"], trained["output/1"]
    assert list(s.batch_sizes) == BATCHES
    ax = plot.voltage_traces(s, 1, sample=2, neurons=[0, 4, 6])
    flat = [ln for ln in ax.lines if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2]
    assert [ln.get_ydata()[0] for ln in flat] == [1.0]  # SpikingJelly's default v_threshold
    v, spikes = s[1][:, 2], out[1][:, 2]  # [T, neurons]: the same step's output is the reference
    want = sorted((int(t), float(v[t, k])) for k in (0, 4, 6) for t in np.flatnonzero(spikes[:, k]))
    assert len(want) > 2, "the data must hold spikes for the test to mean anything"
    marks = ax.collections[-1]  # one star per spike, on its neuron's trace
    assert sorted((int(x), float(y)) for x, y in np.asarray(marks.get_offsets())) == want
    assert "spike (output/1)" in _legend(ax) and "threshold = 1.0" in _legend(ax)
    assert ax.get_ylabel() == "membrane potential (a.u.)"
    assert "module 1 (LIFNode)" in ax.get_title() and "step 1" in ax.get_title()
    ax = plot.voltage_traces(trained["v_seq/block.lif"], 0, neurons=2, threshold=0.5)
    assert [ln.get_ydata()[0] for ln in ax.lines if len(ln.get_ydata()) == 2] == [0.5]
    assert ax.get_ylabel() == "membrane potential (mV)" and "module block.lif (LIFNode)" in ax.get_title()
    ax = plot.voltage_traces(trained["v_seq/1"], 0, threshold=None, spikes=False)
    assert len(ax.lines) == 5 and not ax.collections and _legend(ax)[-1] == "neuron 4"


def test_without_an_output_stream_the_marks_are_inferred_and_the_legend_says_so(trained):
    s = trained["v_seq/lonely"]
    ax = plot.voltage_traces(s, 0, neurons=[1, 3], threshold=1.2)
    v = s[0][:, 0]
    want = {(t, k) for k in (1, 3) for t in np.flatnonzero(v[:, k] >= 1.2)}
    assert want
    offsets = np.asarray(ax.collections[-1].get_offsets())
    assert len(offsets) == len(want) and all(float(y) >= 1.2 for _x, y in offsets)
    assert any("inferred" in t and "output/lonely" in t for t in _legend(ax))
    assert ax.get_title().startswith("v_seq/lonely · module lonely ·")  # no class known for it


def test_an_output_stream_of_other_neurons_is_not_taken_for_the_spikes(tmp_path):
    path = tmp_path / "sub.zarr"
    with spikestore.Store(path, mode="w") as store:
        store.set_stream_info("output/fc", selection=M_SEL)
        store.set_stream_info("v_seq/fc", selection=M_SEL)
        store.set_step(0)
        store.append("output/fc", np.ones((3, 2, 4), np.float32))  # a selection of 4 neurons of the layer
        store.append("v_seq/fc", np.array([0.5, 1.5, 0.2])[:, None, None] * np.ones((3, 2, 6), np.float32))
    with spikestore.open(path) as run:
        ax = plot.voltage_traces(run["v_seq/fc"], neurons=[5])
        assert [tuple(p) for p in np.asarray(ax.collections[-1].get_offsets())] == [(1.0, 1.5)]
        assert "v ≥ threshold (inferred: no matching output/fc)" in _legend(ax)
    plt.close("all")


def test_raster_and_traces_default_to_the_last_full_batch_record(trained):
    s = trained["output/1"]
    assert s.batch_sizes[-1] == 2 and plot.full_batch_record(s) == 3  # step 4's batch is short
    ax = plot.raster(s, sample=3)  # sample 3 exists only in a full batch
    x = s[3][:, 3]
    assert set(map(tuple, np.asarray(ax.collections[0].get_offsets()).astype(int))) == \
        set(zip(*np.nonzero(x), strict=True))
    assert "step 3" in ax.get_title() and "module 1 (LIFNode)" in ax.get_title()
    assert "step 3" in plot.voltage_traces(trained["v_seq/1"]).get_title()
    assert "step 4" in plot.raster(s, -1).get_title()  # a record given is the record drawn


def test_short_batches_are_marked_and_layers_named_by_module(trained):
    assert list(plot.short_batch_steps(trained)) == [2, 4]
    ax = plot.firing_rate_heatmap(trained)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1 (LIFNode)", "block.lif (LIFNode)"]
    assert _vlines(ax) == [2.0, 4.0] and _legend(ax) == ["short batch"]
    ax = plot.grad_norms(trained)
    assert _vlines(ax) == [2.0, 4.0]
    assert _legend(ax) == ["1 (LIFNode)", "block.lif (LIFNode)", "short batch"]
    assert plot.layer_label(trained, "nope") == "nope" and plot.layer_label(trained, "") == "(root)"


def test_the_draw_functions_take_arrays_and_axes():
    fig, ax = plt.subplots()
    v = np.array([[0.2, 0.5], [0.9, 0.0], [0.0, 0.4]])
    spikes = np.array([[0, 0], [0, 1], [1, 0]], bool)
    plot.draw.draw_voltage(ax, v, [0, 1], threshold=0.8, spikes=spikes, spike_label="spike (mine)")
    assert {tuple(p) for p in np.asarray(ax.collections[0].get_offsets())} == {(2.0, 0.0), (1.0, 0.0)}
    assert "spike (mine)" in _legend(ax)
    ax2 = fig.add_subplot(2, 1, 2)
    plot.draw.draw_grad_norms(ax2, np.array([[1.0, 2.0, 9.0]]), np.array([10, 11, 12]), ["fc"], short_steps=[12])
    assert _vlines(ax2) == [12.0] and ax2.get_yscale() == "log"
    plt.close(fig)


def _cli(args: list[str], monkeypatch) -> tuple[Any, list[Axes]]:
    """Run ``spikestore plot`` in this process; the result and the axes of each figure it saved."""
    from click.testing import CliRunner
    from matplotlib.figure import Figure

    from spikestore.cli import main

    saved: list[Axes] = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig.axes[0]))
    return CliRunner().invoke(main, ["plot", *args]), saved


def test_cli_plot_suggests_a_voltage_stream_and_draws_the_threshold(trained, tmp_path, monkeypatch):
    path, out = str(trained.path), str(tmp_path / "p.png")
    r, _ = _cli([path, "--kind", "voltage", "--out", out], monkeypatch)
    assert r.exit_code == 2 and "--stream v_seq/1" in r.output and "output/" not in r.output
    assert "v_seq/block.lif" in r.output and "v_seq/lonely" in r.output
    r, saved = _cli([path, "--kind", "voltage", "--stream", "v_seq/1", "--threshold", "0.75", "--out", out],
                    monkeypatch)
    assert r.exit_code == 0, r.output
    ax = saved[0]
    assert [ln.get_ydata()[0] for ln in ax.lines if len(ln.get_ydata()) == 2] == [0.75]
    assert "step 3" in ax.get_title() and "spike (output/1)" in _legend(ax)
    r, saved = _cli([path, "--kind", "voltage", "--stream", "v_seq/1", "--out", out], monkeypatch)
    assert r.exit_code == 0 and [ln.get_ydata()[0] for ln in saved[0].lines if len(ln.get_ydata()) == 2] == [1.0]
    r, saved = _cli([path, "--kind", "raster", "--stream", "output/1", "--out", out], monkeypatch)
    assert r.exit_code == 0 and "step 3" in saved[0].get_title()
    r, saved = _cli([path, "--kind", "rates", "--out", out], monkeypatch)
    assert r.exit_code == 0 and _vlines(saved[0]) == [2.0, 4.0]
    assert "--threshold" in _cli(["--help"], monkeypatch)[0].output
    plt.close("all")


def test_cli_plot_voltage_without_a_voltage_stream_says_what_the_store_holds(tmp_path, monkeypatch):
    path = tmp_path / "spikes.zarr"
    with spikestore.Store(path, mode="w") as store:
        store.set_stream_info("output/fc", selection=M_SEL)
        store.set_step(0)
        store.append("output/fc", np.ones((2, 3, 4), np.float32))
        store.append("grad_input/fc", np.float32(1.0))
    r, saved = _cli([str(path), "--kind", "voltage", "--out", str(tmp_path / "v.png")], monkeypatch)
    assert r.exit_code == 2 and not saved
    assert "no voltage stream" in r.output and "grad_input, output" in r.output and "--kind raster" in r.output
