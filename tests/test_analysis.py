"""spikestore.analysis against a direct numpy computation over the written values."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from helpers import M_SEL, S_SEL, record_as_ranks

import spikestore
from spikestore import InvalidArgumentError, analysis

T, STEPS = 6, 9


class Rec(NamedTuple):
    step: int
    call: int
    value: np.ndarray
    rank: int


def _record(store, rng, rank: int, data: dict[str, list[Rec]]) -> None:
    """One rank's records: multi-step spikes (two layers, a smaller last batch), single-step spikes
    with several records per step, graded (raw) spikes and gradients."""
    def add(key, step, call, value):
        store.append(key, value)
        data.setdefault(key, []).append(Rec(step, call, value, rank))

    for key in ("output/a", "output/b"):
        store.set_stream_info(key, selection=M_SEL)
    store.set_stream_info("output.1/s", selection=S_SEL)
    for step in range(STEPS):
        store.set_step(step)
        batch = 4 if step < STEPS - 1 else 3
        add("output/a", step, 0, (rng.random((T, batch, 12)) < 0.05 + 0.05 * step).astype(np.float32))
        add("output/b", step, 0, (rng.random((T, batch, 5)) < 0.2).astype(np.float32))
        for t in range(T):
            add("output.1/s", step, t, (rng.random((batch, 7)) < 0.3).astype(np.float32))
        add("graded/g", step, 0, (rng.random((3, 4)) * (rng.random((3, 4)) < 0.5)).astype(np.float32))
        for layer in ("a", "b"):  # backward hooks: the last layer first
            key = f"grad_input/{'b' if layer == 'a' else 'a'}"
            add(key, step, 0, np.float32(rng.random() * 10 ** -step))
        add("grad_output/a", step, 0, rng.standard_normal((2, 3)).astype(np.float32))
        add("grad_output/a", step, 1, rng.standard_normal((2, 3)).astype(np.float32))


@pytest.fixture(params=["zarr", "hdf5", "zarr, 2 ranks"])
def run_and_data(request, tmp_path, monkeypatch):
    """A run and what was written to it, each stream's records in the run's order (by step, then
    rank, then call). "2 ranks": two ranks of a process group (faked in this process) record one run,
    each its own data, so every function here also runs on streams merged over ranks."""
    path = tmp_path / ("run.h5" if request.param == "hdf5" else "run.zarr")
    rng = np.random.default_rng(1)
    data: dict[str, list[Rec]] = {}
    if "ranks" in request.param:
        record_as_ranks(path, monkeypatch, lambda store, rank: _record(store, rng, rank, data), chunk_bytes=300)
    else:
        with spikestore.Store(path, mode="w", chunk_bytes=300) as store:
            _record(store, rng, 0, data)
    data = {k: sorted(v, key=lambda r: (r.step, r.rank, r.call)) for k, v in data.items()}
    run = spikestore.open(path)
    assert run.ranks == ([0, 1] if "ranks" in request.param else [0])
    yield run, data
    run.close()


SMALL = 50  # max_elements: forces several blocks per chunk


def test_spike_counts(run_and_data):
    run, data = run_and_data
    for key in ("output/a", "output.1/s", "graded/g"):
        recs = [v for _, _, v, _ in data[key]]
        for budget in (SMALL, analysis.MAX_ELEMENTS):
            per_record = analysis.spike_counts(run[key], max_elements=budget)
            np.testing.assert_array_equal(per_record, [np.count_nonzero(v) for v in recs])
            assert per_record.dtype == np.int64
        by_step = analysis.spike_counts(run[key], "step", max_elements=SMALL)
        ref = [sum(np.count_nonzero(v) for s, _, v, _ in data[key] if s == step) for step in range(STEPS)]
        np.testing.assert_array_equal(by_step.values, ref)
        np.testing.assert_array_equal(by_step.step.values, np.arange(STEPS))
    recs = [r.value for r in data["output/a"]]
    np.testing.assert_array_equal(analysis.spike_counts(run["output/a"], "neuron", max_elements=SMALL),
                                  sum(v.sum(axis=(0, 1)) for v in recs))


def test_firing_rate_per_neuron_record_step_all(run_and_data):
    run, data = run_and_data
    for key, sample_axes in (("output/a", (0, 1)), ("output.1/s", (0,)), ("graded/g", ())):
        recs = [v for _, _, v, _ in data[key]]
        s = run[key]
        spikes = [(v != 0) for v in recs]
        samples = sum(int(np.prod([v.shape[a] for a in sample_axes])) for v in recs)
        ref_neuron = sum(x.sum(axis=sample_axes) for x in spikes) / samples
        np.testing.assert_allclose(analysis.firing_rate(s, max_elements=SMALL), ref_neuron)
        np.testing.assert_allclose(analysis.firing_rate(s, "record", max_elements=SMALL), [x.mean() for x in spikes])
        ref_all = sum(x.sum() for x in spikes) / sum(x.size for x in spikes)
        assert analysis.firing_rate(s, "all") == pytest.approx(ref_all)
        by_step = analysis.firing_rate(s, "step", max_elements=SMALL)
        for step in range(STEPS):
            xs = [x for (st, _, _, _), x in zip(data[key], spikes, strict=True) if st == step]
            assert by_step.sel(step=step).item() == pytest.approx(sum(x.sum() for x in xs) / sum(x.size for x in xs))
    with pytest.raises(InvalidArgumentError, match="per must be"):
        analysis.firing_rate(run["output/a"], "layer")


def test_firing_rate_per_layer_and_layer_by_step(run_and_data):
    run, data = run_and_data
    per_layer = analysis.firing_rate(run, "layer")
    assert per_layer.layer.values.tolist() == ["a", "b"]
    for layer in ("a", "b"):
        recs = [v for _, _, v, _ in data[f"output/{layer}"]]
        want = sum(v.sum() for v in recs) / sum(v.size for v in recs)
        assert per_layer.sel(layer=layer).item() == pytest.approx(want)
    heat = analysis.firing_rate(run, "step")
    assert heat.dims == ("layer", "step") and heat.shape == (2, STEPS)
    at4 = [r.value for r in data["output/b"] if r.step == 4]
    assert heat.sel(layer="b", step=4).item() == pytest.approx(np.mean(at4))
    assert analysis.firing_rate(run, "layer", quantity="output.1").layer.values.tolist() == ["s"]
    with pytest.raises(InvalidArgumentError, match="no 'nope' streams"):
        analysis.firing_rate(run, "layer", quantity="nope")


def test_population_rate(run_and_data):
    run, data = run_and_data
    pop = analysis.population_rate(run["output/a"], max_elements=SMALL)
    assert pop.dims == ("record", "time") and pop.shape == (len(data["output/a"]), T)
    ref = np.stack([v.mean(axis=(1, 2)) for _, _, v, _ in data["output/a"]])
    np.testing.assert_allclose(pop.values, ref)
    np.testing.assert_array_equal(pop.step.values, [r.step for r in data["output/a"]])
    np.testing.assert_array_equal(pop["rank"].values, [r.rank for r in data["output/a"]])
    single = analysis.population_rate(run["output.1/s"])
    assert single.dims == ("record",)
    np.testing.assert_allclose(single.values, [v.mean() for _, _, v, _ in data["output.1/s"]])
    np.testing.assert_array_equal(single.call.values[:T + 1], [*range(T), 0])


def _isi_reference(trains):
    """Histogram of intervals between consecutive spikes of each 0/1 sequence."""
    out: dict[int, int] = {}
    for train in trains:
        times = np.flatnonzero(train)
        for d in np.diff(times):
            out[int(d)] = out.get(int(d), 0) + 1
    return out


def test_inter_spike_intervals(run_and_data):
    run, data = run_and_data
    multi = analysis.inter_spike_intervals(run["output/a"], max_elements=SMALL)
    trains = [v[:, b, n] for _, _, v, _ in data["output/a"] for b in range(v.shape[1]) for n in range(v.shape[2])]
    ref = _isi_reference(trains)
    assert dict(zip(multi.interval.values.tolist(), multi.values.tolist(), strict=True)) == \
        {d: ref.get(d, 0) for d in range(1, max(ref) + 1)}
    single = analysis.inter_spike_intervals(run["output.1/s"], max_elements=SMALL)
    trains = []
    for step, rank in np.ndindex(STEPS, len(run.ranks)):  # each rank's records are its own samples
        seq = np.stack([r.value for r in data["output.1/s"] if (r.step, r.rank) == (step, rank)])  # [T, batch, 7]
        trains += [seq[:, b, n] for b in range(seq.shape[1]) for n in range(seq.shape[2])]
    ref = _isi_reference(trains)
    assert dict(zip(single.interval.values.tolist(), single.values.tolist(), strict=True)) == \
        {d: ref.get(d, 0) for d in range(1, max(ref) + 1)}


def test_grad_norms(run_and_data, tmp_path):
    run, data = run_and_data
    norms = analysis.grad_norms(run)
    assert norms.dims == ("layer", "step")
    assert norms.layer.values.tolist() == ["a", "b"]  # network order, not hook order
    for layer in ("a", "b"):
        ref = [np.sqrt(sum(float(r.value) ** 2 for r in data[f"grad_input/{layer}"] if r.step == step))
               for step in range(STEPS)]
        np.testing.assert_allclose(norms.sel(layer=layer).values, ref, rtol=1e-6)
    full = analysis.grad_norms(run, quantity="grad_output", max_elements=4)
    for step in range(STEPS):
        vs = [v for s, _, v, _ in data["grad_output/a"] if s == step]
        want = np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in vs))
        assert full.sel(layer="a", step=step).item() == pytest.approx(want)
    sweep = analysis.grad_norms({0.5: run, 2.0: run}, name="alpha")
    assert sweep.dims == ("alpha", "layer") and sweep.alpha.values.tolist() == [0.5, 2.0]
    np.testing.assert_allclose(sweep.sel(alpha=2.0).values, norms.mean("step").values)


def test_analysis_of_a_stream_without_spikes_and_of_one_without_records(store_path):
    with spikestore.Store(store_path, mode="w") as store:
        store.set_stream_info("output/none", selection=M_SEL)  # listed, never appended to
        store.append("output/x", np.zeros((2, 3), np.float32))
    run = spikestore.open(store_path)
    assert analysis.firing_rate(run["output/x"], "all") == 0.0
    assert analysis.inter_spike_intervals(run["output/x"]).size == 0
    empty = run["output/none"]
    assert len(empty) == 0 and analysis.spike_counts(empty).size == 0
    assert np.isnan(analysis.firing_rate(empty, "all"))
    with pytest.raises(InvalidArgumentError, match="no records yet"):
        analysis.firing_rate(empty)
    run.close()


def test_intervals_never_join_the_records_of_two_ranks(tmp_path, monkeypatch):
    """Both ranks record step 5 only: rank 0 spikes at its call 0, rank 1 at its call 3. Each rank's
    sequence has one spike, so no interval; a pass that carried rank 0's last spike into rank 1's
    records would count an interval of 3."""
    def record(store, rank):
        store.set_stream_info("output/s", selection=S_SEL)
        store.set_step(5)
        for call in range(4):
            store.append("output/s", np.full((2, 3), call == 3 * rank, np.float32))

    path = tmp_path / "run.zarr"
    record_as_ranks(path, monkeypatch, record)
    run = spikestore.open(path)
    s = run["output/s"]
    assert s.ranks.tolist() == [0] * 4 + [1] * 4 and analysis.spike_counts(s).tolist() == [6, 0, 0, 0, 0, 0, 0, 6]
    assert analysis.inter_spike_intervals(s).size == 0
    assert analysis.inter_spike_intervals(run.rank(0)["output/s"]).size == 0


def test_record_positions_place_every_segment_of_every_rank_in_the_stream(run_and_data):
    run, data = run_and_data
    s, recs = run["output/a"], data["output/a"]
    local = _positions(recs)
    seen: list[int] = []
    for seg in s.segments:
        pos = s.record_positions(seg)
        assert [recs[p].rank for p in pos] == [seg.rank] * seg.count
        assert [local[p] for p in pos] == list(range(seg.start, seg.stop))
        np.testing.assert_array_equal(s[pos], np.stack([recs[p].value for p in pos]))
        seen.extend(pos.tolist())
    assert sorted(seen) == list(range(len(s)))


def _positions(recs):
    """Position of each record in its own rank's stream."""
    seen: dict[int, int] = {}
    out = []
    for r in recs:
        out.append(seen.get(r.rank, 0))
        seen[r.rank] = out[-1] + 1
    return out
