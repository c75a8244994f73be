"""What ``spikestore watch`` shows, as text: one row per stream, sparklines, a stream's neurons.

Both the terminal view and ``--once`` build on these functions, so the two
always show the same numbers. They take a :class:`~spikestore.live.Snapshot`
and never read the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from spikestore.live._snapshot import Snapshot, StreamSummary

__all__ = [
    "COLUMNS", "LEFT_ALIGNED", "format_bytes", "neuron_lines", "render_snapshot", "sparkline", "status_lines",
    "stream_row",
]

#: Characters of a sparkline, lowest first (Unicode blocks) and the ASCII ramp for terminals that lack them.
BLOCKS = "▁▂▃▄▅▆▇█"
ASCII_RAMP = "_.-:=+*#"

#: The stream table's columns, in order.
COLUMNS: tuple[str, ...] = ("stream", "records", "last step", "rate / mean", "history", "dead", "saturated",
                            "on disk", "rec/s", "state")
#: The columns drawn left-aligned (text); the others are numbers, right-aligned.
LEFT_ALIGNED = frozenset({"stream", "history", "state"})


def sparkline(values: np.ndarray | Sequence[float] | None, width: int = 20, *, ascii_only: bool = False) -> str:
    """``values`` as ``width`` characters, each the mean of its share of the points, scaled from their
    minimum to their maximum (a flat series draws as the lowest bar). Empty or absent values draw nothing."""
    if values is None:
        return ""
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0 or width <= 0:
        return ""
    if data.size > width:
        edges = np.linspace(0, data.size, width + 1).astype(np.int64)
        data = np.add.reduceat(data, edges[:-1]) / np.diff(edges)
    ramp = ASCII_RAMP if ascii_only else BLOCKS
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return ramp[0] * data.size
    levels = np.clip(((data - low) / (high - low) * (len(ramp) - 1)).round(), 0, len(ramp) - 1).astype(np.int64)
    return "".join(ramp[i] for i in levels)


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units, as ``spikestore info`` prints them (``4.6 MiB``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _fraction(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def _latest_value(s: StreamSummary, ascii_only: bool) -> str:
    """The last point of the rate (binary) or mean (float) history."""
    series = s.rate if s.binary else s.mean
    if series is None or len(series) == 0:
        return "-"
    value = float(series[-1])
    if s.binary:
        return f"{value:.3f}"
    spread = float(s.std[-1]) if s.std is not None and len(s.std) else 0.0
    if not spread:  # a scalar per step (a gradient norm), or a constant record: the mean says it all
        return f"{value:.3g}"
    return f"{value:.3g} {'+-' if ascii_only else '±'} {spread:.2g}"


def stream_row(s: StreamSummary, failure: str | None, *, width: int = 20, ascii_only: bool = False) -> tuple[str, ...]:
    """The cells of ``s``'s row, one per :data:`COLUMNS` entry."""
    rate = f"{s.records_per_second:.1f}" if s.records_per_second is not None else "-"
    state = f"FAILED: {failure}" if failure else ("spikes" if s.binary else "values")
    return (s.key, str(s.records), "-" if s.last_step is None else str(s.last_step), _latest_value(s, ascii_only),
            sparkline(s.rate if s.binary else s.mean, width, ascii_only=ascii_only), _fraction(s.dead_fraction),
            _fraction(s.saturated_fraction), format_bytes(s.bytes_on_disk), rate, state)


def status_lines(snap: Snapshot) -> list[str]:
    """The lines above the table: the store, the writer's status (each rank's, for several), records dropped
    over every rank, failed streams, the last refresh."""
    w = snap.writer
    modified = sum(int(ww.get("modified", 0)) for ww in (snap.writers or {0: w}).values())
    status = str(w.get("status", "?"))
    if status == "open":
        status += " (being written, or the writer was killed)"
    lines = [f"store    {snap.path}",
             f"writer   {status}; pid {w.get('pid', '?')} on {w.get('host', '?')}",
             f"dropped  {snap.dropped} records (queue full), {modified} (changed in place)"]
    if len(snap.writers) > 1:
        lines.insert(2, "ranks    " + ", ".join(f"{r} {ww.get('status', '?')}" for r, ww in snap.writers.items()))
    if w.get("error"):
        lines.append(f"error    {w['error']}")
    if snap.failed:
        lines.append("failed   " + "; ".join(f"{k}: {why}" for k, why in snap.failed.items()))
    lines.append(f"refresh  {snap.new_records} new records in {snap.refresh_seconds * 1e3:.0f} ms")
    return lines


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as fixed-width text, left-aligned names and right-aligned numbers."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if name in LEFT_ALIGNED else c.rjust(w) for name, c, w in zip(COLUMNS, row, widths,
                                                                                             strict=True)]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def render_snapshot(snap: Snapshot, *, ascii_only: bool = False) -> str:
    """One plain-text snapshot: the status lines and the stream table (what ``--once`` prints)."""
    rows = [COLUMNS] + [stream_row(s, snap.failed.get(key), ascii_only=ascii_only)
                        for key, s in snap.streams.items()]
    return "\n".join([*status_lines(snap), "", *_table(rows)])


def neuron_lines(s: StreamSummary, *, count: int = 8, width: int = 64, ascii_only: bool = False) -> list[str]:
    """A stream's neurons: a heat row of the per-neuron rates (each character the mean of its share of the
    neurons), then the ``count`` most and least active neurons with their rates.

    Float streams have no firing rates: they show the mean of each neuron over the last record instead.
    """
    if s.binary and s.neuron_rates is not None:
        values = np.asarray(s.neuron_rates, dtype=np.float64)
        what = "firing rate over the recent window"
    elif s.latest is not None and np.asarray(s.latest).size:
        latest = np.asarray(s.latest, dtype=np.float64)
        values = latest.reshape(-1, latest.shape[-1]).mean(axis=0) if latest.ndim else latest.reshape(1)
        what = "mean over the last record"
    else:
        return [f"{s.key}: no records yet"]
    lines = [f"{s.key}: {values.size} neurons, {what}"
             + (f"; dead {_fraction(s.dead_fraction)}, saturated {_fraction(s.saturated_fraction)}"
                if s.binary else "")]
    if values.size:
        lines.append(f"neurons  {sparkline(values, min(width, values.size), ascii_only=ascii_only)}"
                     f"  ({values.min():.3g} .. {values.max():.3g})")
        order = np.argsort(-values, kind="stable")
        top = ", ".join(f"#{i} {values[i]:.3g}" for i in order[:count])
        bottom = ", ".join(f"#{i} {values[i]:.3g}" for i in order[::-1][:count])
        lines += [f"most active   {top}", f"least active  {bottom}"]
    if s.per_rank:
        lines.append("ranks    " + "; ".join(f"rank {r}: {p.records} records, last step {p.last_step}"
                                             for r, p in s.per_rank.items()))
    return lines
