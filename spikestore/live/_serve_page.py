"""The page of ``spikestore serve``: one Bokeh document per browser tab.

Each document reads the latest published :class:`~spikestore.live._serve_data.PageData`
(never the store) and redraws when its version changes, so a hundred open tabs
cost the store nothing more than one. Everything it draws is bounded: the
engine's step history, one step's records, a heat map of at most
``HEAT_NEURONS x HEAT_COLUMNS`` cells.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from bokeh.core.properties import field
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, LinearColorMapper
from bokeh.models.annotations import ColorBar, Legend, LegendItem, Span, Title
from bokeh.models.widgets import Div, RangeSlider, Select, Spinner
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure

from spikestore.live._serve_data import LatestStep, NeuronHeat, PageData

__all__ = ["PageOptions", "build_page", "stream_table"]

#: Neurons drawn as voltage traces at most (the first ones of the chosen range).
MAX_TRACES = 8
WIDTH = 620


@dataclass(frozen=True)
class PageOptions:
    """What the command line sets for every page: the refresh interval (s) and the firing threshold."""

    interval: float
    threshold: float


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None or not np.isfinite(value) else format(value, spec)


def stream_table(data: PageData) -> str:
    """The HTML of the stream list: latest committed step, records, rate, dead and saturated neurons, size."""
    status = data.writer.get("status", "?")
    steps = [s.last_step for s in data.streams.values() if s.last_step is not None]
    latest = max(steps) if steps else None
    rows = []
    for key, s in data.streams.items():
        level = s.rate[-1] if s.binary and s.rate is not None and len(s.rate) else \
            s.mean[-1] if s.mean is not None and len(s.mean) else None
        failed = data.failed.get(key)
        rows.append(
            f'<tr data-stream="{html.escape(key)}"><td class="ss-key">{html.escape(key)}</td>'
            f'<td class="ss-step">{"" if s.last_step is None else s.last_step}</td>'
            f'<td>{s.records}</td><td>{"rate " if s.binary else "mean "}{_fmt(level, ".4g")}</td>'
            f'<td>{_fmt(s.dead_fraction, ".0%")}</td><td>{_fmt(s.saturated_fraction, ".0%")}</td>'
            f'<td>{s.bytes_on_disk / 1e6:.2f} MB</td>'
            f'<td>{html.escape(failed) if failed else ""}</td></tr>')
    return (
        f'<div class="ss-head"><b>{html.escape(data.path)}</b> &middot; writer {html.escape(str(status))}'
        f' &middot; latest step <span class="ss-latest">{"" if latest is None else latest}</span>'
        f' &middot; {len(data.streams)} streams</div>'
        '<table class="ss-streams" style="border-spacing:12px 1px;font:12px monospace">'
        '<tr><th align=left>stream</th><th>latest step</th><th>records</th><th>at the latest step</th>'
        '<th>dead</th><th>saturated</th><th>on disk</th><th>failed</th></tr>'
        + "".join(rows) + "</table>")


def _window(slider: RangeSlider, size: int) -> tuple[int, int]:
    """Clamp ``slider`` to ``[0, size - 1]`` and return its integer range (end included)."""
    end = max(size - 1, 1)
    if slider.end != end:
        slider.end = end
    lo, hi = (round(v) for v in slider.value)
    lo, hi = max(0, min(lo, size - 1)), max(0, min(hi, size - 1))
    if (lo, hi) != tuple(slider.value):
        slider.value = (lo, max(lo, hi))
    return lo, max(lo, hi)


class _Page:
    """The widgets and plots of one document, and how a :class:`PageData` fills them."""

    def __init__(self, get_data: Callable[[], PageData | None], options: PageOptions) -> None:
        self.get_data, self.options, self.version = get_data, options, 0
        self._offsets = (0, 0)  # first time step and neuron of what _frame cut last
        self.table = Div(text="waiting for the store...", name="streams", width=2 * WIDTH)
        self.spikes = Select(title="spike stream (raster, heat map)", name="spike_stream", width=260)
        self.voltage = Select(title="voltage stream", name="voltage_stream", width=260)
        self.sample = Spinner(title="sample", low=0, step=1, value=0, width=90, name="sample")
        self.time = RangeSlider(title="time steps", start=0, end=1, value=(0, 1 << 20), step=1, width=250)
        self.neurons = RangeSlider(title="neurons", start=0, end=1, value=(0, 1 << 20), step=1, width=250)

        self.rates = figure(title="firing rate per layer", x_axis_label="step", y_axis_label="spikes / value",
                            width=WIDTH, height=260, name="rates")
        self.rate_lines: dict[str, ColumnDataSource] = {}
        self.grads = figure(title="gradient norms (mean per step)", x_axis_label="step", y_axis_label="norm",
                            width=WIDTH, height=260, y_axis_type="log", name="grads")
        self.grad_lines: dict[str, ColumnDataSource] = {}

        self.raster_src = ColumnDataSource({"t": [], "n": []})
        self.raster_title, self.heat_title, self.volt_title = Title(text="raster"), Title(text=""), Title(text="")
        self.raster = figure(title=self.raster_title, x_axis_label="time step", y_axis_label="neuron",
                             width=WIDTH, height=300, name="raster")
        self.raster.scatter(x="t", y="n", source=self.raster_src, marker="dash", angle=np.pi / 2, size=7,
                            color="black")

        self.heat_map = LinearColorMapper(palette=Viridis256, low=0, high=1)
        self.heat_src = ColumnDataSource({"image": [np.zeros((1, 1))], "x": [0], "y": [0], "dw": [1], "dh": [1]})
        self.heat = figure(title=self.heat_title, x_axis_label="step", y_axis_label="neuron",
                           width=WIDTH, height=300, name="heat")
        heat = self.heat.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.heat_src)
        heat.glyph.color_mapper = self.heat_map
        self.heat.add_layout(ColorBar(color_mapper=self.heat_map, title="rate"), "right")

        self.volt_src = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self.mark_src = ColumnDataSource({"t": [], "v": [], "color": []})
        self.volt = figure(title=self.volt_title, x_axis_label="time step",
                           y_axis_label="membrane potential (model units)", width=WIDTH + 120, height=300,
                           name="voltage")
        lines = self.volt.multi_line(xs="xs", ys="ys", color="color", source=self.volt_src)
        traces: list[Any] = [lines]  # the legend's list is typed for any glyph; a list of one kind is not one
        legend = Legend(items=[LegendItem(label=field("label"), renderers=traces)], click_policy="hide")
        self.volt.add_layout(legend, "right")  # beside the traces, not over them
        self.volt.scatter(x="t", y="v", color="color", marker="inverted_triangle", size=9, source=self.mark_src)
        self.volt.add_layout(Span(location=options.threshold, dimension="width", line_dash="dashed",
                                  line_color="gray"))

        for widget in (self.spikes, self.voltage, self.sample):
            widget.on_change("value", self._on_choice)
        for slider in (self.time, self.neurons):
            slider.on_change("value_throttled", self._on_choice)

    def layout(self) -> Any:
        controls = row(self.spikes, self.voltage, self.sample, self.time, self.neurons)
        return column(self.table, controls, row(self.rates, self.grads), row(self.raster, self.heat),
                      row(self.volt), name="page")

    def _on_choice(self, attr: str, old: Any, new: Any) -> None:
        data = self.get_data()
        if data is not None:
            self._draw_choice(data)

    def poll(self) -> None:
        """Redraw if a newer refresh was published."""
        data = self.get_data()
        if data is None or data.version == self.version:
            return
        self.version = data.version
        self.table.text = stream_table(data)
        spike_keys = [k for k, s in data.streams.items() if s.binary]
        volt_keys = [k for k, s in data.streams.items() if not s.binary and not k.startswith("grad")
                     and k in data.latest and data.latest[k].values.shape[-1] > 1]
        self._pick(self.spikes, spike_keys)
        self._pick(self.voltage, volt_keys)
        self._lines(self.rates, self.rate_lines, {k: (s.steps, s.rate) for k, s in data.streams.items()
                                                  if s.binary and s.rate is not None})
        grads = {k: (s.steps, s.mean) for k, s in data.streams.items()
                 if k.startswith("grad") and s.mean is not None}
        self._lines(self.grads, self.grad_lines, grads)
        self._draw_choice(data)

    @staticmethod
    def _pick(select: Select, keys: list[str]) -> None:
        if list(select.options) != keys:
            select.options = list[str | None](keys)
        if keys and select.value not in keys:
            select.value = keys[0]

    @staticmethod
    def _lines(fig: Any, sources: dict[str, ColumnDataSource], curves: dict[str, tuple[np.ndarray, Any]]) -> None:
        for key, (steps, values) in curves.items():
            src = sources.get(key)
            data = {"step": np.asarray(steps), "value": np.asarray(values, dtype=np.float64)}
            if src is None:
                src = sources[key] = ColumnDataSource(data)
                color = Category10_10[(len(sources) - 1) % len(Category10_10)]
                fig.line(x="step", y="value", source=src, color=color, legend_label=key, line_width=2)
                fig.legend.location = "top_left"
                fig.legend.click_policy = "hide"
            else:
                src.data = data

    def _draw_choice(self, data: PageData) -> None:
        spikes = data.latest.get(self.spikes.value)
        if spikes is not None:
            x, b = self._frame(spikes)
            t, n = np.nonzero(x)
            t0, n0 = self._offsets
            self.raster_src.data = {"t": t + t0, "n": n + n0}
            self.raster_title.text = (f"raster: {self.spikes.value}, step {spikes.step}, sample {b} "
                                      f"({len(t)} spikes)")
            self.raster.xaxis.axis_label = spikes.time_label
        heat = data.heat.get(self.spikes.value)
        if heat is not None and heat.rates.size:
            self._draw_heat(heat)
        volt = data.latest.get(self.voltage.value)
        if volt is not None:
            self._draw_voltage(data, volt)

    def _frame(self, latest: LatestStep) -> tuple[np.ndarray, int]:
        """The chosen sample, time window and neurons of ``latest`` as ``[time, neuron]``."""
        values = latest.values
        b = min(int(self.sample.value or 0), values.shape[1] - 1)
        if self.sample.high != values.shape[1] - 1:
            self.sample.high = values.shape[1] - 1
        t0, t1 = _window(self.time, values.shape[0])
        n0, n1 = _window(self.neurons, values.shape[2])
        self._offsets = (t0, n0)
        return values[t0:t1 + 1, b, n0:n1 + 1], b

    def _draw_heat(self, heat: NeuronHeat) -> None:
        steps, rates = heat.steps, heat.rates
        lo, hi = int(steps[0]), int(steps[-1])
        grid = np.linspace(lo, hi, min(len(steps), 240)) if hi > lo else np.array([lo])
        cols = np.searchsorted(steps, grid, side="right") - 1  # each grid step shows the last column at or before it
        image = rates[:, np.clip(cols, 0, len(steps) - 1)]
        self.heat_map.high = float(np.nanmax(image)) if np.isfinite(image).any() and np.nanmax(image) > 0 else 1.0
        self.heat_src.data = {"image": [image], "x": [lo], "y": [0], "dw": [max(hi - lo, 1)],
                              "dh": [rates.shape[0] * heat.group]}
        group = f", {heat.group} neurons a row" if heat.group > 1 else ""
        self.heat_title.text = f"per-neuron firing rate over steps: {self.spikes.value} ({len(steps)} steps{group})"

    def _draw_voltage(self, data: PageData, volt: LatestStep) -> None:
        x, b = self._frame(volt)
        t0, n0 = self._offsets
        picked = range(min(MAX_TRACES, x.shape[1]))
        times = np.arange(x.shape[0]) + t0
        colors = [Category10_10[k % len(Category10_10)] for k in picked]
        self.volt_src.data = {"xs": [times] * len(colors), "ys": [x[:, k].astype(np.float64) for k in picked],
                              "color": colors, "label": [f"neuron {n0 + k}" for k in picked]}
        spikes, source = self._spikes_for(data, volt, x.shape, b)
        mt, mv, mc = [], [], []
        for k in picked:
            hits = np.flatnonzero(spikes[:, k] if spikes is not None else x[:, k] >= self.options.threshold)
            mt.extend(times[hits].tolist())
            mv.extend([self.options.threshold] * len(hits))
            mc.extend([colors[k]] * len(hits))
        self.mark_src.data = {"t": mt, "v": mv, "color": mc}
        self.volt_title.text = (f"voltage: {self.voltage.value}, step {volt.step}, sample {b}; "
                                f"threshold {self.options.threshold:g} (dashed); spikes {source}")
        self.volt.xaxis.axis_label = volt.time_label

    def _spikes_for(self, data: PageData, volt: LatestStep, shape: tuple[int, ...],
                    b: int) -> tuple[np.ndarray | None, str]:
        """The spikes of the voltage stream's layer at the same step, cut like the traces, if stored."""
        layer = self.voltage.value.partition("/")[2]
        out = data.latest.get(f"output/{layer}")
        if out is not None and out.step == volt.step and out.values.shape == volt.values.shape:
            t0, n0 = self._offsets
            cut = out.values[t0:t0 + shape[0], b, n0:n0 + shape[1]]
            return cut > 0, f"from output/{layer}"
        return None, f"where v >= {self.options.threshold:g}"


def build_page(get_data: Callable[[], PageData | None], options: PageOptions) -> Callable[[Document], None]:
    """The Bokeh application function: lays out one page and polls ``get_data`` every half interval."""

    def make(doc: Document) -> None:
        page = _Page(get_data, options)
        page.poll()  # filled before it joins the document: each model added to a document re-walks all of them
        doc.title = "spikestore serve"
        doc.add_root(page.layout())
        doc.add_periodic_callback(page.poll, max(100, int(options.interval * 500)))

    return make

