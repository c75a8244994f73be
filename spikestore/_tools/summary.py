"""What a store holds, as rows, as a text table and as HTML (demo, CLI, notebooks).

The numbers come from the streams' public views (segments, index arrays,
``nbytes()``), so this module only counts and formats. :func:`spike_coding`
also reads every record of the binary streams, to measure the bytes they take
against the entropy of their spikes (:mod:`spikestore.codecs._bounds`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from spikestore._read.stream import Stream

__all__ = [
    "CODING_HEAD", "HEAD", "flight_lines", "format_bytes", "format_coding", "format_columns", "format_html",
    "format_table", "row_cells", "spike_coding", "summarize", "total_cells",
]


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def summarize(streams: Iterable[Stream]) -> list[dict[str, Any]]:
    """One row per stream: records, steps, shapes, encodings, bytes, ratio.

    ``ratio_to_float32`` compares the bytes of the record data on disk
    (segment chunks, without the per-stream index and metadata files, which
    dominate tiny streams) with the same records held as float32 tensors,
    which is what an in-memory SpikingJelly monitor keeps for spikes.
    ``bytes`` is everything the stream occupies.
    """
    rows = []
    for s in streams:
        n = len(s)
        steps = s.steps if n else np.zeros(0, np.int64)
        shapes = sorted({seg.shape for seg in s.segments}, key=lambda t: (-np.prod(t), t))
        values = sum(int(np.prod(seg.shape, dtype=np.int64)) * seg.count for seg in s.segments)
        on_disk = s.nbytes()
        data = sum(seg.nbytes() for seg in s.segments)
        rows.append({
            "stream": s.key,
            "records": n,
            "segments": len(s.segments),
            "first_step": int(steps[0]) if n else None,
            "last_step": int(steps[-1]) if n else None,
            "shape": shapes[0] if shapes else None,
            "other_shapes": len(shapes) - 1,
            "dtype": ",".join(sorted({seg.doc["dtype"] for seg in s.segments})) or "-",
            "encoding": ",".join(sorted({seg.encoding for seg in s.segments})) or "-",
            "bytes": on_disk,
            "data_bytes": data,
            "float32_bytes": values * 4,
            "ratio_to_float32": data / (values * 4) if values else None,
        })
    return rows


def spike_coding(streams: Iterable[Stream], max_values: int = 1 << 24,
                 progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """One row per stream with bits segments: its spikes, bits per spike, and bytes over each bound.

    ``bytes`` are the bits segments' arrays on disk (chunks and their array
    metadata). The bounds are the Shannon entropy of the stream's spikes
    under three models (:class:`~spikestore.codecs._bounds.SpikeCounts`): one
    rate for every value (``iid``), a rate per neuron (``neuron``), and a
    rate per neuron given its previous time step (``conditional``); the
    ``over_*`` ratios are ``8 * bytes`` over each. Reading takes one pass
    over the streams' chunks, ``max_values`` values at a time; ``progress``
    is called with ``(records read, records to read)`` after each piece.
    """
    from spikestore.codecs._bounds import SpikeCounts

    work = [(s, [seg for seg in s.segments if seg.encoding == "bits" and seg.count]) for s in streams]
    total, done = sum(seg.count for _, segs in work for seg in segs), 0
    rows = []
    for s, segs in work:
        if not segs:
            continue
        counts = SpikeCounts(s.dims)
        for seg in segs:
            counts.reset_sequence()  # (records of different shapes or parts do not follow each other)
            for block in seg.blocks(max_values=max_values):
                counts.add_packed(block.rows(), seg.shape[-1])
                done += len(block)
                if progress is not None:
                    progress(done, total)
        data = 8 * sum(seg.nbytes() for seg in segs)
        bounds = counts.bounds()
        rows.append({
            "stream": s.key, "values": counts.total, "spikes": counts.spikes, "bytes": data // 8,
            "bits_per_spike": data / counts.spikes if counts.spikes else None,
            **{f"bound_{k}": v / 8 for k, v in bounds.items()},
            **{f"over_{k}": data / v if v else None for k, v in bounds.items()},
        })
    return rows


#: Column titles of the spike coding table.
CODING_HEAD = ["stream", "spikes", "rate", "data", "bits/spike", "vs i.i.d.", "vs neuron", "vs conditional"]


def format_coding(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`spike_coding` rows."""
    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}x"

    cells = [[r["stream"], str(r["spikes"]), f"{r['spikes'] / r['values']:.2%}" if r["values"] else "-",
              format_bytes(r["bytes"]), "-" if r["bits_per_spike"] is None else f"{r['bits_per_spike']:.2f}",
              ratio(r["over_iid"]), ratio(r["over_neuron"]), ratio(r["over_conditional"])] for r in rows]
    return format_columns(CODING_HEAD, cells, right=frozenset(range(1, 8)))


#: Column titles of the summary tables (text and HTML).
HEAD = ["stream", "records", "steps", "record shape", "dtype", "encoding", "on disk", "data vs float32"]


def row_cells(r: dict[str, Any], times: str = "x", more: str = "") -> list[str]:
    """The cells of one :func:`summarize` row; ``times`` joins shape dimensions,
    ``more`` follows the count of other shapes."""
    steps = "-" if r["first_step"] is None else f"{r['first_step']}..{r['last_step']}"
    shape = "-" if r["shape"] is None else times.join(map(str, r["shape"])) or "scalar"
    if r["other_shapes"]:
        shape += f" (+{r['other_shapes']}{more})"
    ratio = "-" if r["ratio_to_float32"] is None else f"{100 * r['ratio_to_float32']:.2f}%"
    return [r["stream"], str(r["records"]), steps, shape, r["dtype"], r["encoding"],
            format_bytes(r["bytes"]), ratio]


def total_cells(rows: list[dict[str, Any]], label: str = "total") -> list[str]:
    """The cells of the total line under the rows."""
    data = sum(r["data_bytes"] for r in rows)
    f32 = sum(r["float32_bytes"] for r in rows)
    return [label, str(sum(r["records"] for r in rows)), "", "", "", "",
            format_bytes(sum(r["bytes"] for r in rows)), f"{100 * data / f32:.2f}%" if f32 else "-"]


def format_columns(head: list[str], rows: list[list[str]], right: frozenset[int] = frozenset(),
                   footer: list[str] | None = None) -> str:
    """A fixed-width text table: ``head``, a rule, ``rows``, then a rule and ``footer`` when given.

    Columns are as wide as their widest cell; those numbered in ``right`` are aligned right.
    """
    body = [*rows, *([footer] if footer is not None else [])]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs).rstrip()

    rule = "  ".join("-" * w for w in widths)
    tail = [rule, line(footer)] if footer is not None else []
    return "\n".join([line(head), rule, *(line(r) for r in rows), *tail])


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`summarize` rows, with a total line."""
    return format_columns(HEAD, [row_cells(r) for r in rows], right=frozenset({1, 6, 7}), footer=total_cells(rows))


def format_html(title: str, rows: list[dict[str, Any]]) -> str:
    """An HTML table of :func:`summarize` rows under ``title`` (HTML, given escaped)."""
    from html import escape

    cells = []
    for r in rows:
        row = row_cells(r, times="&times;", more=" more")
        for i in (0, 4, 5):  # the names; the shape cell holds the &times; entity
            row[i] = escape(row[i])
        cells.append(row)
    cells.append(total_cells(rows, label="<b>total</b>"))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)
    return (f"<div>{title}<table><thead><tr>{''.join(f'<th>{h}</th>' for h in HEAD)}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def flight_lines(settings: dict[str, Any], triggers: list[dict[str, Any]], shown: int = 10) -> str:
    """``spikestore info``'s lines for a flight-recorded store: the window, the ring, and the triggers
    (the first ``shown``; docs/flight-recorder.md)."""
    lines = [f"flight     kept steps s-{settings['before']}..s+{settings['after']} around each trigger; "
             f"ring peak {format_bytes(settings.get('ring_peak_bytes', 0))} of {format_bytes(settings['max_bytes'])}"
             + (f", {settings['shrunk_steps']} steps dropped early (budget)" if settings.get("shrunk_steps") else "")]
    more = [f"{k} {settings[k]}" for k in ("repeats", "unlisted") if settings.get(k)]
    lines.append(f"triggers   {len(triggers)}" + (f" ({', '.join(more)})" if more else "")
                 + ("" if triggers else ": nothing was kept"))
    for t in triggers[:shown]:
        where = f" in {t['stream']}" if t.get("stream") else ""
        rank = f" on rank {t['rank']}" if "rank" in t else ""
        lines.append(f"           step {t['step']}: {t['reason']}{where}{rank}")
    if len(triggers) > shown:
        lines.append(f"           ... {len(triggers) - shown} more (Run.triggers)")
    return "\n".join(lines)
