"""The flight recorder (docs/flight-recorder.md): what a store keeps around its triggers.

Every test records the same inputs twice, into a plain store and into a
flight-recorded one, and checks that the flight store holds exactly the
plain store's records of the steps the windows cover (computed here from
the trigger steps), bit for bit, with their steps and calls.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import FlightRecorder, InvalidArgumentError, StreamFailedError

Inputs = Callable[[int], dict[str, object]]


def spikes(step: int, rate: float = 0.3, shape: tuple[int, ...] = (4, 2, 24)) -> np.ndarray:
    return (np.random.default_rng(step).random(shape) < rate).astype(np.float32)


def mixed(step: int) -> dict[str, object]:
    """One step's records of several streams: spikes, a float32 potential, float16, bfloat16 and integers."""
    rng = np.random.default_rng(10_000 + step)
    return {"output/1": spikes(step), "v/1": rng.standard_normal((4, 24)).astype(np.float32),
            "h/1": rng.standard_normal(7).astype(np.float16),
            "b/1": torch.from_numpy(rng.standard_normal(5).astype(np.float32)).bfloat16(),
            "n/1": np.int64(step * 3)}


def record(path: Path, steps: Iterable[int], inputs: Inputs, *, marks: dict[int, str] | None = None,
           rec: FlightRecorder | None = None, calls: int = 1, **kwargs: object) -> None:
    """Record ``inputs(step)`` for every step (``calls`` times each), ``store.trigger`` at ``marks``."""
    with spikestore.Store(path, mode=kwargs.pop("mode", "w"), flight_recorder=rec, **kwargs) as store:
        for step in steps:
            store.set_step(step)
            for _ in range(calls):
                for key, value in inputs(step).items():
                    store.append(key, value)
            if marks and step in marks:
                store.trigger(marks[step])


def windows(triggers: Iterable[int], before: int, after: int) -> set[int]:
    """The steps the windows of ``triggers`` cover (the documented rule, written out)."""
    return {s for t in triggers for s in range(max(0, t - before), t + after + 1)}


def bits(a: np.ndarray) -> np.ndarray:
    """The bytes of ``a``: NaN payloads and signed zeros compare too."""
    return np.ascontiguousarray(a).view(np.uint8)


def assert_kept(flight: Path, plain: Path, kept: set[int]) -> None:
    """``flight`` holds exactly ``plain``'s records of the steps in ``kept``, bit for bit, in order."""
    fl, ref = spikestore.open(flight), spikestore.open(plain)
    want_streams = [k for k in ref.streams if np.isin(ref[k].steps, sorted(kept)).any()]
    assert fl.streams == want_streams
    for key in want_streams:
        r, f = ref[key], fl[key]
        take = np.flatnonzero(np.isin(r.steps, sorted(kept)))
        np.testing.assert_array_equal(f.steps, r.steps[take], err_msg=key)
        np.testing.assert_array_equal(f.calls, r.calls[take], err_msg=key)
        got, want = f[:], r[take]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert np.array_equal(bits(got), bits(want)), key


@pytest.mark.parametrize("suffix", ["zarr", "h5"])
def test_windows_keep_their_edges_and_merge(tmp_path, suffix):
    """Triggers at 10 and 14 (before 3, after 2) merge into 7..16; one at 30 keeps 27..32; nothing else."""
    marks = {10: "loss spike", 14: "again", 30: "late"}
    rec = FlightRecorder(before=3, after=2, triggers=())
    record(tmp_path / f"f.{suffix}", range(40), mixed, marks=marks, rec=rec)
    record(tmp_path / f"p.{suffix}", range(40), mixed)
    kept = windows(marks, 3, 2)
    assert sorted(kept) == [*range(7, 17), *range(27, 33)]
    assert_kept(tmp_path / f"f.{suffix}", tmp_path / f"p.{suffix}", kept)
    run = spikestore.open(tmp_path / f"f.{suffix}")
    assert run.triggers == [{"step": s, "reason": r, "stream": None} for s, r in marks.items()]
    assert run.flight_recorder["before"] == 3 and run.flight_recorder["shrunk_steps"] == 0
    assert spikestore.verify(tmp_path / f"f.{suffix}") == []


def test_a_trigger_in_the_first_steps_keeps_what_exists_and_after_past_the_end_just_ends(tmp_path):
    marks = {1: "early", 19: "last"}
    record(tmp_path / "f.zarr", range(20), mixed, marks=marks, rec=FlightRecorder(before=5, after=10, triggers=()))
    record(tmp_path / "p.zarr", range(20), mixed)
    kept = {s for s in windows(marks, 5, 10) if s < 20}
    assert sorted(kept) == [*range(0, 12), *range(14, 20)]
    assert_kept(tmp_path / "f.zarr", tmp_path / "p.zarr", kept)


def test_several_calls_per_step_keep_their_calls(tmp_path):
    record(tmp_path / "f.zarr", range(12), mixed, marks={6: "x"}, calls=3,
           rec=FlightRecorder(before=1, after=1, triggers=()))
    record(tmp_path / "p.zarr", range(12), mixed, calls=3)
    assert_kept(tmp_path / "f.zarr", tmp_path / "p.zarr", {5, 6, 7})
    assert spikestore.open(tmp_path / "f.zarr")["v/1"].calls.tolist() == [0, 1, 2] * 3


def test_without_a_trigger_nothing_is_written(tmp_path):
    record(tmp_path / "f.zarr", range(30), mixed, rec=FlightRecorder(before=5, after=5))
    run = spikestore.open(tmp_path / "f.zarr")
    assert run.streams == [] and run.triggers == [] and run.writer["status"] == "closed"
    assert run.flight_recorder["checks"] == ["nonfinite"] and run.flight_recorder["ring_peak_bytes"] > 0


NONFINITE = [float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("bad", NONFINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16", "complex64", "complex128"])
def test_nonfinite_fires_on_every_float_dtype_naming_stream_and_step(tmp_path, dtype, bad):
    def inputs(step: int) -> dict[str, object]:
        v = np.random.default_rng(step).standard_normal(6) + (1j if dtype.startswith("complex") else 0)
        if step == 9:
            v[4] = bad if not dtype.startswith("complex") else complex(0.5, bad)
        value = torch.from_numpy(v.astype(np.float32)).bfloat16() if dtype == "bfloat16" else v.astype(dtype)
        return {"output/1": spikes(step), "v/odd": value}

    record(tmp_path / "f.zarr", range(20), inputs, rec=FlightRecorder(before=2, after=1))
    record(tmp_path / "p.zarr", range(20), inputs)
    run = spikestore.open(tmp_path / "f.zarr")
    assert run.triggers == [{"step": 9, "reason": "nonfinite", "stream": "v/odd"}]
    assert_kept(tmp_path / "f.zarr", tmp_path / "p.zarr", {7, 8, 9, 10})
    stored = run["v/odd"][2]
    assert not np.isfinite(stored).all() and run["v/odd"].segments[0].dtype == dtype


def test_nonfinite_is_found_in_lossy_records_and_not_in_integers(tmp_path):
    rec = FlightRecorder(before=0, after=0)
    with spikestore.Store(tmp_path / "f.zarr", flight_recorder=rec) as store:
        for step in range(6):
            store.set_step(step)
            v = np.linspace(-1, 1, 9, dtype=np.float32)
            v[step] = np.inf if step in (2, 4) else v[step]
            store.append("v/bf16", v, precision="bf16" if step < 3 else "keepbits:4")
            store.append("n/int", np.full(3, -(2**31), np.int32))
    run = spikestore.open(tmp_path / "f.zarr")
    assert [(t["step"], t["stream"]) for t in run.triggers] == [(2, "v/bf16"), (4, "v/bf16")]
    assert run["v/bf16"].steps.tolist() == [2, 4] and run["n/int"].steps.tolist() == [2, 4]
    assert np.isinf(run["v/bf16"][0][2]) and np.isinf(run["v/bf16"][1][4])


def test_silent_and_saturated_fire_at_their_thresholds(tmp_path):
    rates = {3: 0.0, 6: 0.04, 9: 1.0, 12: 0.97, 15: 0.5}

    def inputs(step: int) -> dict[str, object]:
        rate = rates.get(step, 0.3)
        a = np.zeros(100, np.float32)
        a[: round(rate * 100)] = 1
        return {"output/1": np.random.default_rng(step).permutation(a)}

    record(tmp_path / "d.zarr", range(18), inputs, rec=FlightRecorder(0, 0, ("silent", "saturated")))
    got = [(t["step"], t["reason"]) for t in spikestore.open(tmp_path / "d.zarr").triggers]
    assert got == [(3, "silent"), (9, "saturated")]
    record(tmp_path / "t.zarr", range(18), inputs,
           rec=FlightRecorder(0, 0, ("saturated", "silent"), silent_rate=0.05, saturated_rate=0.95))
    run = spikestore.open(tmp_path / "t.zarr")
    assert [(t["step"], t["reason"]) for t in run.triggers] == [(3, "silent"), (6, "silent"), (9, "saturated"),
                                                                (12, "saturated")]
    assert run["output/1"].steps.tolist() == [3, 6, 9, 12]


def test_a_callable_sees_the_record_as_a_reader_does_and_names_the_reason(tmp_path):
    seen: list[tuple[str, str, tuple[int, ...]]] = []

    def big(key: str, values: np.ndarray) -> str | None:
        seen.append((key, values.dtype.name, values.shape))
        return f"{key} over 5" if key == "v/1" and values.max() > 5 else None

    def inputs(step: int) -> dict[str, object]:
        out = mixed(step)
        if step == 11:
            out["v/1"] = np.full((4, 24), 6.5, np.float32)
        return out

    record(tmp_path / "f.zarr", range(16), inputs, rec=FlightRecorder(2, 2, (big,)))
    record(tmp_path / "p.zarr", range(16), inputs)
    assert spikestore.open(tmp_path / "f.zarr").triggers == [{"step": 11, "reason": "v/1 over 5", "stream": "v/1"}]
    assert_kept(tmp_path / "f.zarr", tmp_path / "p.zarr", {9, 10, 11, 12, 13})
    assert seen[:5] == [("output/1", "float32", (4, 2, 24)), ("v/1", "float32", (4, 24)),
                        ("h/1", "float16", (7,)), ("b/1", "float32", (5,)), ("n/1", "int64", ())]


@pytest.mark.parametrize("bad", [lambda k, v: 3, lambda k, v: "", lambda k, v: 1 / 0])
def test_a_callable_that_fails_stops_its_stream_alone_keeping_what_it_kept(tmp_path, bad):
    def trig(key: str, values: np.ndarray) -> str | None:
        return bad(key, values) if key == "v/1" and values[0] > 1 else None

    store = spikestore.Store(tmp_path / "f.zarr", flight_recorder=FlightRecorder(1, 1, (trig,)))
    store.append("output/1", spikes(0))
    store.append("v/1", np.ones(3, np.float32))
    store.trigger("keep")  # keeps steps 0 and 1
    store.set_step(1)
    store.append("v/1", np.full(3, 2.0, np.float32))  # the trigger fails on it
    store.append("output/1", spikes(1))
    with pytest.raises(StreamFailedError, match="v/1"):
        store.flush()
    store.close()
    run = spikestore.open(tmp_path / "f.zarr")
    assert run.streams == ["output/1", "v/1"]
    assert run["v/1"].steps.tolist() == [0] and run["output/1"].steps.tolist() == [0, 1]
    assert "v/1" in run.writer["failed_streams"]


def test_a_trigger_repeated_inside_its_window_is_counted_and_extends_it(tmp_path):
    def inputs(step: int) -> dict[str, object]:
        return {"v/1": np.full(3, np.nan if 10 <= step <= 20 else 1.0, np.float32), "output/1": spikes(step)}

    record(tmp_path / "f.zarr", range(40), inputs, rec=FlightRecorder(before=2, after=3))
    record(tmp_path / "p.zarr", range(40), inputs)
    run = spikestore.open(tmp_path / "f.zarr")
    assert [t["step"] for t in run.triggers] == [10, 14, 18]  # one listed per window of its own
    assert run.flight_recorder["repeats"] == 11 - 3
    assert_kept(tmp_path / "f.zarr", tmp_path / "p.zarr", windows(range(10, 21), 2, 3))


def test_the_budget_drops_the_oldest_steps_first_counts_and_warns(tmp_path):
    step_bytes = 4 * 2 * 3 + 256  # one packed record of 4x2x24 spikes, and its overhead
    rec = FlightRecorder(before=20, after=0, triggers=(), max_bytes=5 * step_bytes)
    with pytest.warns(RuntimeWarning, match="dropped 26 steps early"):
        record(tmp_path / "f.zarr", range(31), lambda s: {"output/1": spikes(s)}, marks={30: "x"}, rec=rec)
    run = spikestore.open(tmp_path / "f.zarr")
    assert run["output/1"].steps.tolist() == [26, 27, 28, 29, 30]  # the trigger's own step, and 4 before it
    fr = run.flight_recorder
    assert fr["ring_peak_bytes"] == 5 * step_bytes and fr["shrunk_steps"] == 26


def test_a_step_larger_than_the_budget_is_held_alone(tmp_path):
    rec = FlightRecorder(before=5, after=0, triggers=(), max_bytes=10)
    with pytest.warns(RuntimeWarning, match="dropped 7 steps early"):
        record(tmp_path / "f.zarr", range(8), lambda s: {"output/1": spikes(s)}, marks={7: "x"}, rec=rec)
    assert spikestore.open(tmp_path / "f.zarr")["output/1"].steps.tolist() == [7]


def test_memory_stays_within_the_budget(tmp_path):
    """Incompressible records, 24 MiB in all, through a ring of 1 MiB: traced memory grows by the budget,
    the queue bound and a margin, not by the records (a ring without the budget holds 6 MiB and fails)."""
    rng = np.random.default_rng(0)
    data = [rng.random(32 << 10) for _ in range(8)]  # 256 KiB each; zstd cannot shrink random float64

    def run(path: Path, budget: int) -> int:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            with spikestore.Store(path, max_pending_bytes=1 << 20,
                                  flight_recorder=FlightRecorder(before=24, after=0, triggers=(), max_bytes=budget)
                                  ) as store:
                for step in range(96):
                    store.set_step(step)
                    store.append("v/1", data[step % 8])
                store.flush()
                peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        return peak

    with pytest.warns(RuntimeWarning, match="budget"):
        small = run(tmp_path / "small.zarr", 1 << 20)
    big = run(tmp_path / "big.zarr", 1 << 30)
    assert small < (1 << 20) + (1 << 20) + (2 << 20), small
    assert big > 6 << 20


def test_overlapping_windows_from_several_streams_merge(tmp_path):
    def inputs(step: int) -> dict[str, object]:
        out = mixed(step)
        if step in (20, 23):
            out["v/1"] = np.full((4, 24), np.inf, np.float32)
        if step == 24:
            out["h/1"] = np.full(7, np.nan, np.float16)
        return out

    record(tmp_path / "f.zarr", range(40), inputs, marks={5: "user"}, rec=FlightRecorder(4, 1))
    record(tmp_path / "p.zarr", range(40), inputs)
    run = spikestore.open(tmp_path / "f.zarr")
    assert [(t["step"], t["stream"]) for t in run.triggers] == [(5, None), (20, "v/1"), (23, "v/1"), (24, "h/1")]
    assert_kept(tmp_path / "f.zarr", tmp_path / "p.zarr", windows([5, 20, 23, 24], 4, 1))


def test_append_mode_keeps_earlier_triggers(tmp_path):
    rec = FlightRecorder(1, 1, triggers=())
    record(tmp_path / "f.zarr", range(10), mixed, marks={3: "first"}, rec=rec)
    record(tmp_path / "f.zarr", range(10, 20), mixed, marks={15: "second"}, rec=rec, mode="a")
    run = spikestore.open(tmp_path / "f.zarr")
    assert [t["reason"] for t in run.triggers] == ["first", "second"]
    assert run["v/1"].steps.tolist() == [2, 3, 4, 14, 15, 16]


def test_bad_settings_and_calls_are_refused():
    for kwargs in ({"before": -1}, {"after": 1.5}, {"before": True}, {"max_bytes": 0},
                   {"triggers": ("nan",)}, {"triggers": (3,)}, {"silent_rate": 1.0},
                   {"silent_rate": 0.5, "saturated_rate": 0.4}, {"saturated_rate": 2}):
        with pytest.raises(InvalidArgumentError, match="FlightRecorder"):
            FlightRecorder(**kwargs)
    assert FlightRecorder(triggers="silent").triggers == ("silent",)


def test_trigger_needs_a_flight_recorder_and_a_reason(tmp_path):
    with spikestore.Store(tmp_path / "p.zarr") as store, pytest.raises(InvalidArgumentError, match="flight_recorder"):
        store.trigger("x")
    with spikestore.Store(tmp_path / "f.zarr", flight_recorder=FlightRecorder()) as store:
        for reason in ("", None, "x" * 1001):
            with pytest.raises(InvalidArgumentError, match="reason"):
                store.trigger(reason)
    with pytest.raises(InvalidArgumentError, match="FlightRecorder"):
        spikestore.Store(tmp_path / "g.zarr", flight_recorder={"before": 3})


def test_selection_and_attrs_reach_a_kept_stream(tmp_path):
    with spikestore.Store(tmp_path / "f.zarr", flight_recorder=FlightRecorder(0, 0, ())) as store:
        store.set_stream_info("output/1", attrs={"a": 1})
        store.set_stream_info("never/1", attrs={"b": 2})
        store.set_stream_info("output/1", attrs={"a": 2})
        store.append("output/1", spikes(0))
        store.trigger("x")
    run = spikestore.open(tmp_path / "f.zarr")
    assert run.streams == ["output/1"] and run["output/1"].attrs == {"a": 2}


def test_a_step_counter_that_starts_again_starts_the_windows_afresh(tmp_path):
    """Epoch-local steps (0..19, then 0..19 again): a trigger in the second epoch keeps the second epoch's
    steps around it, not the first epoch's records of the same step numbers."""
    steps = [*range(20), *range(20)]
    with spikestore.Store(tmp_path / "f.zarr", flight_recorder=FlightRecorder(2, 1, triggers=())) as store:
        for i, step in enumerate(steps):
            store.set_step(step)
            store.append("v/1", np.float64(i))  # the position in the run tells the epochs apart
            if i in (4, 25):
                store.trigger(f"at {i}")
    run = spikestore.open(tmp_path / "f.zarr")
    assert [t["step"] for t in run.triggers] == [4, 5]
    assert run["v/1"].steps.tolist() == [2, 3, 4, 5, 3, 4, 5, 6]
    assert run["v/1"][:].tolist() == [2, 3, 4, 5, 23, 24, 25, 26]
