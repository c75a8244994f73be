"""What one browser tab of ``spikestore serve`` draws, as JSON: :func:`page_view`.

The page (``static/page.js``) asks for it with the choices its controls hold
(:class:`Choice`); the answer is computed from the latest published
:class:`~spikestore.live._serve_data.PageData` and never reads the store.
Everything in it is bounded whatever the run's length: the engine's step
history, one step's records of one sample, the heat map's cells. Arrays
travel compactly: spikes as bits (base64 of ``np.packbits``), the heat map as
one byte a cell, floats rounded to 6 significant digits, non-finite values as
``null`` (JSON has no NaN).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spikestore.errors import InvalidArgumentError
from spikestore.live._serve_data import LatestStep, NeuronHeat, PageData

__all__ = ["MAX_TRACES", "Choice", "page_view", "stream_rows"]

#: Neurons drawn as voltage traces at most (the first ones of the chosen range).
MAX_TRACES = 8
#: Short-batch steps marked at most (the latest ones); more would be a solid band on a 2000-point curve.
MAX_SHORT = 500


@dataclass(frozen=True)
class Choice:
    """What a tab's controls ask for: streams, sample, time steps and neurons (``None``: everything)."""

    spikes: str | None = None
    voltage: str | None = None
    sample: int = 0
    time: tuple[int, int] | None = None
    neurons: tuple[int, int] | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Choice:
        """Read the choices from a request's query arguments; :class:`InvalidArgumentError` names a bad one."""
        def number(name: str) -> int | None:
            text = query.get(name, "")
            if text == "":
                return None
            try:
                value = int(text)
            except ValueError:
                raise InvalidArgumentError(f"{name}={text!r}: expected a whole number") from None
            if value < 0:
                raise InvalidArgumentError(f"{name}={value}: expected 0 or more")
            return value

        def span(lo: str, hi: str) -> tuple[int, int] | None:
            a, b = number(lo), number(hi)
            if a is None and b is None:
                return None
            a, b = a or 0, b if b is not None else 1 << 30
            return (a, max(a, b))

        return cls(query.get("spikes") or None, query.get("voltage") or None, number("sample") or 0,
                   span("t0", "t1"), span("n0", "n1"))


def _floats(values: Any) -> list[float | None]:
    """``values`` as JSON numbers (6 significant digits), ``None`` where not finite."""
    out: list[float | None] = []
    for v in np.asarray(values, dtype=np.float64).ravel().tolist():
        out.append(float(f"{v:.6g}") if math.isfinite(v) else None)
    return out


def _level(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{value:.4g}")


def stream_rows(data: PageData) -> list[dict[str, Any]]:
    """The stream list: latest committed step, records, level at that step, dead and saturated neurons, size,
    and for spikes the stored bits per spike and their ratio to the spikes' conditional entropy."""
    rows = []
    for key, s in data.streams.items():
        series = s.rate if s.binary else s.mean
        rows.append({"key": key, "binary": s.binary, "step": s.last_step, "records": s.records,
                     "level": _level(float(series[-1])) if series is not None and len(series) else None,
                     "dead": _level(s.dead_fraction), "saturated": _level(s.saturated_fraction),
                     "bytes": s.bytes_on_disk, "bits_per_spike": _level(s.bits_per_spike),
                     "over_conditional": _level((s.bits_over_bounds or {}).get("conditional")),
                     "failed": data.failed.get(key)})
    return rows


def _curves(data: PageData, keys: list[str], binary: bool) -> list[dict[str, Any]]:
    curves = []
    for key in keys:
        s = data.streams[key]
        values = s.rate if binary else s.mean
        if values is not None and len(s.steps):
            curves.append({"key": key, "steps": s.steps.tolist(), "values": _floats(values)})
    return curves


def _window(span: tuple[int, int] | None, size: int) -> tuple[int, int]:
    """``span`` clamped to ``[0, size - 1]`` (end included); all of it for ``None``."""
    if span is None:
        return 0, size - 1
    lo = min(span[0], size - 1)
    return lo, max(lo, min(span[1], size - 1))


def _frame(latest: LatestStep, choice: Choice) -> tuple[np.ndarray, dict[str, Any]]:
    """The chosen sample, time steps and neurons of ``latest`` as ``[time, neuron]``, and where they sit."""
    values = latest.values
    b = min(choice.sample, values.shape[1] - 1)
    t0, t1 = _window(choice.time, values.shape[0])
    n0, n1 = _window(choice.neurons, values.shape[2])
    where = {"step": latest.step, "sample": b, "samples": values.shape[1], "time_steps": values.shape[0],
             "neurons": values.shape[2], "t0": t0, "t1": t1, "n0": n0, "n1": n1, "time_label": latest.time_label}
    return values[t0:t1 + 1, b, n0:n1 + 1], where


def _bits(x: np.ndarray) -> str:
    return base64.b64encode(np.packbits(x.astype(bool), axis=None).tobytes()).decode("ascii")


def _raster(latest: LatestStep, choice: Choice) -> dict[str, Any]:
    x, where = _frame(latest, choice)
    spikes = x > 0
    return {**where, "shape": list(spikes.shape), "bits": _bits(spikes), "count": int(spikes.sum())}


def _heat(heat: NeuronHeat) -> dict[str, Any] | None:
    """At most 240 columns on an even step grid; rates as one byte a cell, 255 at the map's maximum."""
    steps, rates = heat.steps, heat.rates
    if not rates.size:
        return None
    lo, hi = int(steps[0]), int(steps[-1])
    grid = np.linspace(lo, hi, min(len(steps), 240)) if hi > lo else np.array([lo])
    cols = np.searchsorted(steps, grid, side="right") - 1  # each grid step shows the last column at or before it
    image = rates[:, np.clip(cols, 0, len(steps) - 1)]
    finite = np.isfinite(image)
    high = float(np.max(image[finite])) if finite.any() else 0.0
    scale = 255 / high if high > 0 else 0.0
    cells = np.where(finite, np.rint(np.nan_to_num(image) * scale), 0).astype(np.uint8)
    return {"lo": lo, "hi": hi, "rows": int(cells.shape[0]), "columns": int(cells.shape[1]), "group": heat.group,
            "high": float(f"{high:.4g}"), "steps": len(steps),
            "cells": base64.b64encode(np.ascontiguousarray(cells).tobytes()).decode("ascii")}


def _voltage(data: PageData, key: str, latest: LatestStep, choice: Choice, threshold: float) -> dict[str, Any]:
    x, where = _frame(latest, choice)
    picked = range(min(MAX_TRACES, x.shape[1]))
    layer = key.partition("/")[2]
    out = data.latest.get(f"output/{layer}")
    if out is not None and out.step == latest.step and out.values.shape == latest.values.shape:
        t0, n0 = where["t0"], where["n0"]
        spikes = out.values[t0:t0 + x.shape[0], where["sample"], n0:n0 + x.shape[1]] > 0
        source = f"from output/{layer}"
    else:
        spikes = x >= threshold
        source = f"where v >= {threshold:g}"
    return {**where, "traces": [_floats(x[:, k]) for k in picked],
            "marks": [np.flatnonzero(spikes[:, k]).tolist() for k in picked], "source": source}


def page_view(data: PageData, choice: Choice, threshold: float) -> dict[str, Any]:
    """Everything a tab draws for ``choice``, JSON-ready (see the module docstring for the encodings)."""
    spike_keys = [k for k, s in data.streams.items() if s.binary]
    volt_keys = [k for k, s in data.streams.items() if not s.binary and not k.startswith("grad")
                 and k in data.latest and data.latest[k].values.shape[-1] > 1]
    spikes = choice.spikes if choice.spikes in spike_keys else (spike_keys[0] if spike_keys else None)
    voltage = choice.voltage if choice.voltage in volt_keys else (volt_keys[0] if volt_keys else None)
    steps = [s.last_step for s in data.streams.values() if s.last_step is not None]
    view: dict[str, Any] = {
        "version": data.version, "path": data.path, "writer": str(data.writer.get("status", "?")),
        "latest": max(steps) if steps else None, "streams": stream_rows(data),
        "spike_keys": spike_keys, "voltage_keys": volt_keys, "spikes": spikes, "voltage": voltage,
        "threshold": threshold, "short_steps": data.short_steps[-MAX_SHORT:].tolist(),
        "rates": _curves(data, spike_keys, True),
        "grads": _curves(data, [k for k in data.streams if k.startswith("grad")], False),
        "raster": None, "heat": None, "trace": None}
    if spikes is not None and spikes in data.latest:
        view["raster"] = _raster(data.latest[spikes], choice)
    if spikes is not None and spikes in data.heat:
        view["heat"] = _heat(data.heat[spikes])
    if voltage is not None:
        view["trace"] = _voltage(data, voltage, data.latest[voltage], choice, threshold)
    return view
