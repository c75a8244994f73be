"""Statistics and the printed report of ``tools/bench_workload.py``.

The orchestrator collects one result dict per worker run and one dict per
alternated pair; this module turns them into the summary (medians over runs,
ratio = median of per-pair ratios to the unmonitored run of the same pair),
the before/after comparison of two spikestore versions, the consistency
checks (identical losses, equal record and spike counts) and noise warnings,
and prints the tables. It holds no measurement, so the numbers can be
re-derived from a saved JSON file.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

__all__ = [
    "checks",
    "compare_versions",
    "fmt_bytes",
    "noise_warnings",
    "print_comparison",
    "print_long",
    "print_table",
    "summarize",
]

MB = 1 << 20


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt_bytes(n: float | None) -> str:
    """``n`` bytes as MiB (from 0.1 MiB) or KiB; ``"-"`` for ``None``."""
    if n is None:
        return "-"
    return f"{n / MB:.1f} MiB" if n >= 0.1 * MB else f"{n / 1024:.1f} KiB"


def summarize(runs: list[dict[str, Any]], pairs: list[dict[str, Any]], values_per_step: int,
              variants: list[str]) -> dict[str, Any]:
    """Per-variant medians over runs and pair ratios.

    Parameters
    ----------
    runs
        Worker results, each with ``"variant"``.
    pairs
        One dict per alternated pair: ``variant``, ``ratio`` (ms/step of the
        variant over the unmonitored run of the pair), ``ratio_step_p50``.
    values_per_step
        LIF values recorded per step (for the recorded values per second).
    variants
        Variant names, in the order the summary should list them.
    """
    summary: dict[str, Any] = {}
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        base = v == "unmonitored"
        ratios = [p["ratio"] for p in pairs if p["variant"] == v]
        ms = _med([r["ms_per_step"] for r in rs])
        steps = rs[0]["steps"]
        s: dict[str, Any] = {
            "runs": len(rs),
            "ms_per_step_median": ms,
            "ms_per_step_all": [round(r["ms_per_step"], 2) for r in rs],
            "ratio_median": 1.0 if base else _med(ratios),
            "step_ms_p50_median": _med([r["step_ms_median"] for r in rs]),
            "ratio_step_p50_median": (1.0 if base else _med(
                [p["ratio_step_p50"] for p in pairs if p["variant"] == v])),
            "setup_ms_median": _med([r["setup_ms"] for r in rs]),
            "teardown_ms_median": _med([r["teardown_ms"] for r in rs]),
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "peak_rss_growth_mb_median": _med([r["peak_rss_growth_mb"] for r in rs]),
            "peak_rss_growth_mb_per_step": _med([r["peak_rss_growth_mb"] for r in rs]) / steps,
            "recorded_values_per_s": None if base else values_per_step / (ms / 1e3),
        }
        for key in ("held_bytes", "held_storage_bytes", "disk_bytes"):
            if key in rs[0]:
                s[key + "_median"] = _med([r[key] for r in rs])
        if "ones" in rs[0]:
            s["spikes_per_step"] = rs[0]["ones"] / steps
            s["records"] = rs[0]["records"]
        if rs[0].get("spikestore_file"):
            s["spikestore_file"] = sorted({r["spikestore_file"] for r in rs})
        summary[v] = s
    return summary


def compare_versions(pairs: list[dict[str, Any]], variant: str, baseline: str
                     ) -> dict[str, Any] | None:
    """Ratio of two variants recorded in the same repeats (``variant / baseline``).

    Per repeat holding a pair of each: ``ratio`` is ms/step of ``variant``
    over ms/step of ``baseline``, ``ratio_of_pair_ratios`` the same with each
    first divided by the unmonitored run of its own pair. The medians over
    repeats are the headline; ``None`` when no repeat holds both.
    """
    by_rep: dict[int, dict[str, dict[str, Any]]] = {}
    for p in pairs:
        if p["variant"] in (variant, baseline):
            by_rep.setdefault(p["repeat"], {})[p["variant"]] = p
    both = [d for _, d in sorted(by_rep.items()) if len(d) == 2]
    if not both:
        return None
    ratios = [d[variant]["ms_per_step"] / d[baseline]["ms_per_step"] for d in both]
    rr = [d[variant]["ratio"] / d[baseline]["ratio"] for d in both]
    return {"variant": variant, "baseline": baseline, "repeats": len(both),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "ratios": ratios,
            "ratio_of_pair_ratios_median": statistics.median(rr), "ratio_of_pair_ratios": rr}


def checks(runs: list[dict[str, Any]], expected_records: int) -> list[str]:
    """Consistency problems (empty list = all good)."""
    problems: list[str] = []
    ref = runs[0]["losses"]
    for r in runs:
        if r["losses"] != ref:
            diff = max(abs(a - b) for a, b in zip(r["losses"], ref, strict=False))  # a shorter run differs too
            problems.append(f"{r['variant']} {r['tag']}: losses differ from "
                            f"{runs[0]['variant']} {runs[0]['tag']} (max |diff| {diff:.3g})")
    psums = {r["param_abs_sum"] for r in runs}
    if len(psums) > 1:
        problems.append(f"final parameters differ between runs (sum |p|: {sorted(psums)})")
    ones = {(r["variant"], r["ones"]) for r in runs if "ones" in r}
    if len({o for _, o in ones}) > 1:
        problems.append(f"recorded spike counts differ between variants: {sorted(ones)}")
    for r in runs:
        if r.get("bad_steps"):
            problems.append(f"{r['variant']} {r['tag']}: streams {r['bad_steps']} are not "
                            "keyed by the steps passed to store.set_step")
        if "records" in r and r["records"] != expected_records:
            problems.append(f"{r['variant']} {r['tag']}: {r['records']} records, "
                            f"expected {expected_records}")
    if len({r["torch_threads"] for r in runs}) > 1:
        problems.append("torch thread counts differ between runs")
    files = {r["variant"]: r["spikestore_file"] for r in runs if r.get("spikestore_file")}
    if len(files) > 1 and len(set(files.values())) < len(files):
        problems.append(f"spikestore variants imported the same code: {files}")
    return problems


def noise_warnings(runs: list[dict[str, Any]]) -> list[str]:
    """Signs that the machine was busy: the baseline's speed is not stable."""
    out: list[str] = []
    base = [r["step_ms_median"] for r in runs if r["variant"] == "unmonitored"]
    if len(base) >= 2 and max(base) > 1.3 * min(base):
        out.append(f"unmonitored step p50 ranged {min(base):.0f}-{max(base):.0f} ms across "
                   "runs: the machine was busy; trust the pair ratios' median, not single "
                   "numbers (or rerun / use more --repeats, or --threads 1)")
    for r in runs:
        st = r["step_ms"]
        if len(st) >= 3 and max(st) > 3 * statistics.median(st):
            out.append(f"{r['variant']} {r['tag']}: one step took {max(st):.0f} ms vs a "
                       f"median of {statistics.median(st):.0f} ms")
    return out


def print_table(summary: dict[str, Any], *, steps: int, warmup: int, repeats: int,
                backend: str, values_per_step: int) -> None:
    """Print the per-variant table of :func:`summarize`."""
    print()
    print(f"Reference workload, {steps} timed steps per run (after {warmup} warm-up), "
          f"{repeats} repeat(s), backend={backend}; medians over runs, ratio = median "
          "of per-pair ratios [min-max]")
    print(f"LIF values recorded per step: {values_per_step:,} "
          f"({values_per_step * 4 / MB:.1f} MiB as float32)")
    print("ms/step = whole timed wall (monitor/store creation + steps + remove_hooks/close) / "
          "steps; p50 step = median single-step time (noise diagnostic, leaves out "
          "creation and close); close ms = remove_hooks (+ store.close())")
    w = max(12, *(len(v) for v in summary))
    hdr = (f"{'variant':<{w}} {'n':>2} {'ms/step':>8} {'ratio':>6} {'[min-max]':>13} "
           f"{'p50 step':>8} {'p50 ratio':>9} {'close ms':>8} "
           f"{'peak RSS +MiB':>12} {'MiB/step':>8} {'held/on disk':>13} {'spikes/step':>12} "
           f"{'Mvals/s':>8}")
    print(hdr)
    print("-" * len(hdr))
    for v, s in summary.items():
        rng = (f"[{s['ratio_min']:.2f}-{s['ratio_max']:.2f}]" if s["ratio_min"] is not None
               else "")
        held = s.get("disk_bytes_median", s.get("held_bytes_median"))
        sp = s.get("spikes_per_step")
        mv = s["recorded_values_per_s"]
        print(f"{v:<{w}} {s['runs']:>2} {s['ms_per_step_median']:8.1f} {s['ratio_median']:6.2f} "
              f"{rng:>13} {s['step_ms_p50_median']:8.1f} {s['ratio_step_p50_median']:9.2f} "
              f"{s['teardown_ms_median']:8.1f} {s['peak_rss_growth_mb_median']:12.1f} "
              f"{s['peak_rss_growth_mb_per_step']:8.2f} {fmt_bytes(held):>13} "
              f"{(f'{sp:,.0f}' if sp is not None else '-'):>12} "
              f"{(f'{mv / 1e6:.1f}' if mv else '-'):>8}")
    if "memory" in summary and "held_storage_bytes_median" in summary["memory"]:
        m = summary["memory"]
        print(f"(memory: records hold {fmt_bytes(m['held_bytes_median'])} of tensors, "
              f"{fmt_bytes(m['held_storage_bytes_median'])} of underlying storage)")
    files = [f"{v} from {', '.join(str(Path(f).parent) for f in s['spikestore_file'])}"
             for v, s in summary.items() if s.get("spikestore_file")]
    if len(files) > 1:
        print(f"({'; '.join(files)})")


def print_comparison(cmp: dict[str, Any], baseline_commit: str | None) -> None:
    """Print the result of :func:`compare_versions`."""
    at = f" at {baseline_commit}" if baseline_commit else ""
    print(f"\n{cmp['variant']} / {cmp['baseline']}{at}: {cmp['ratio_median']:.3f}x "
          f"[{cmp['ratio_min']:.3f}-{cmp['ratio_max']:.3f}] (median of {cmp['repeats']} "
          f"per-repeat ratios of ms/step; of their ratios to unmonitored: "
          f"{cmp['ratio_of_pair_ratios_median']:.3f}x); below 1 means this checkout is faster")


def print_long(r: dict[str, Any]) -> None:
    """Print the result of a ``--long`` worker run."""
    print()
    print(f"[long] {r['steps']} steps, {r['ms_per_step']:.1f} ms/step overall (incl. close "
          f"{r['close_s']:.2f} s), {r['records']}/{r['expected_records']} records, "
          f"{fmt_bytes(r['disk_bytes'])} on disk")
    print(f"[long] RSS: start {r['rss_start_mb']:.0f} MiB, before close "
          f"{r['rss_before_close_mb']:.0f} MiB, after close {r['rss_end_mb']:.0f} MiB")
    if "growth_after_warmup_mb" in r:
        print(f"[long] after the {r['warmup_steps']}-step warm-up (RSS "
              f"{r['rss_after_warmup_mb']:.0f} MiB): growth {r['growth_after_warmup_mb']:+.1f} "
              f"MiB at the end, max {r['max_growth_after_warmup_mb']:+.1f} MiB, slope "
              f"{r.get('slope_mb_per_1000_steps', 0.0):+.2f} MiB per 1000 steps")
