"""spikestore.live: a Follower's summaries against numpy over the whole stream, read directly.

The references read every record of a stream through ``spikestore.open`` and
compute each figure from scratch; the follower reaches the same figures from
the records committed since each refresh. Stores are small (chunks of a few
records) so that refreshes meet partly filled chunks, several segments and
several ranks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import count_chunk_reads, record_as_ranks

import spikestore
from spikestore.errors import InvalidArgumentError
from spikestore.live import Follower, Snapshot, StreamSummary

SPIKES, VOLTS, GRAD = "output/fc", "v_seq/fc", "grad_input/fc"
NEURONS = 10


def spikes(rng: np.random.Generator, batch: int) -> np.ndarray:
    """A [T=3, batch, 10] spike record: neuron 0 always fires, neuron 9 never does."""
    x = (rng.random((3, batch, NEURONS)) < 0.3).astype(np.float32)
    x[..., 0], x[..., 9] = 1, 0
    return x


def write_steps(store: spikestore.Store, rng: np.random.Generator, steps: range, rank: int = 0) -> None:
    """Two spike records (calls) a step, the last steps with a smaller batch (a second segment); one voltage
    record far from zero (a mean that a sum of squares would lose) and one scalar a step."""
    for step in steps:
        store.set_step(step)
        batch = 2 if step >= 40 else 4
        for _ in range(2):
            store.append(SPIKES, spikes(rng, batch))
        store.append(VOLTS, (1e4 + rank + rng.standard_normal((3, batch, NEURONS))).astype(np.float32))
        store.append(GRAD, np.float32(rng.random() + step))


def records(run: spikestore.Run, key: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Every record of stream ``key`` in record order, and their steps: read directly."""
    s = run[key]
    return [s[i] for i in range(len(s))], np.asarray(s.steps)


def check_summary(run: spikestore.Run, summary: StreamSummary, window: int) -> None:
    """``summary`` (no decimation: one point per step) against numpy over every record of its stream."""
    values, steps = records(run, summary.key)
    assert summary.records == len(values)
    assert summary.last_step == int(steps.max())
    assert summary.bytes_on_disk == run[summary.key].nbytes()
    assert summary.neurons == (summary.latest.shape[-1] if summary.latest.ndim else 1)
    np.testing.assert_array_equal(summary.steps, np.unique(steps))
    per_step = [np.concatenate([v.reshape(-1) for v, s in zip(values, steps, strict=True) if s == t])
                for t in summary.steps]
    if summary.binary:
        assert summary.mean is None and summary.std is None and summary.rate is not None
        np.testing.assert_allclose(summary.rate, [np.count_nonzero(x) / x.size for x in per_step], rtol=1e-12)
        recent = np.unique(steps)[-window:]
        picked = [v.reshape(-1, NEURONS) for v, s in zip(values, steps, strict=True) if s in recent]
        counts = sum(np.count_nonzero(p, axis=0) for p in picked)
        points = sum(len(p) for p in picked)
        assert summary.neurons == NEURONS
        assert summary.neuron_rates is not None
        np.testing.assert_allclose(summary.neuron_rates, counts / points, rtol=1e-12)
        assert summary.dead_fraction == pytest.approx(np.mean(counts == 0))
        assert summary.saturated_fraction == pytest.approx(np.mean(counts == points))
        assert summary.dead_fraction >= 0.1 and summary.saturated_fraction >= 0.1  # neurons 9 and 0
        spike_bits = 8 * sum(seg.nbytes() for seg in run[summary.key].segments)
        assert summary.bits_per_spike == pytest.approx(spike_bits / sum(np.count_nonzero(v) for v in values))
    else:
        assert summary.rate is None and summary.neuron_rates is None and summary.dead_fraction is None
        assert summary.mean is not None and summary.std is not None
        np.testing.assert_allclose(summary.mean, [x.astype(np.float64).mean() for x in per_step], rtol=1e-12)
        np.testing.assert_allclose(summary.std, [x.astype(np.float64).std() for x in per_step], rtol=1e-9)
    np.testing.assert_array_equal(summary.latest, values[-1])


def check_snapshot(path: Path, snap: Snapshot, window: int) -> None:
    with spikestore.open(path) as run:
        assert list(snap.streams) == run.streams
        for summary in snap.streams.values():
            check_summary(run, summary, window)
        ranks = run.ranks
        if len(ranks) > 1:
            for key, summary in snap.streams.items():
                assert set(summary.per_rank) == set(ranks) and summary.ranks == tuple(ranks)
                for r, part in summary.per_rank.items():
                    assert part.per_rank == {} and part.ranks == (r,)
                    check_summary(run.rank(r), part, window)
                assert summary.records == sum(p.records for p in summary.per_rank.values()), key
        else:
            assert all(s.per_rank == {} for s in snap.streams.values())


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_finished_run_matches_numpy(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    with spikestore.Store(path, chunk_bytes=200) as store:
        write_steps(store, np.random.default_rng(1), range(50))
    with Follower(path, window=7, history=1000) as f:
        snap = f.refresh()
        assert snap.new_records == 50 * 4 and snap.writer["status"] == "closed" and snap.failed == {}
        check_snapshot(path, snap, 7)
        assert len(snap.streams[SPIKES].steps) == 50
        again = f.refresh()
        assert again.new_records == 0
        np.testing.assert_array_equal(again.streams[SPIKES].rate, snap.streams[SPIKES].rate)


def test_two_ranks_match_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ranks.zarr"
    # Rank 1 records fewer steps: merged points of the last steps hold rank 0 alone.
    record_as_ranks(path, monkeypatch, lambda store, r: write_steps(store, np.random.default_rng(r),
                                                                    range(45 - 10 * r)), chunk_bytes=200)
    with Follower(path, window=6) as f:
        snap = f.refresh()
    assert snap.new_records == 4 * (45 + 35) and set(snap.writers) == {0, 1}
    check_snapshot(path, snap, 6)
    with spikestore.open(path) as run:  # a range of the index of a stream of several parts: record order
        np.testing.assert_array_equal(run[SPIKES].index("step", 3, 90), run[SPIKES].steps[3:90])


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_following_a_writer_gives_what_a_fresh_follower_gives(tmp_path: Path, suffix: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"live{suffix}"
    rng = np.random.default_rng(2)
    store = spikestore.Store(path, chunk_bytes=200)
    try:
        write_steps(store, rng, range(1))
        store.flush()
        follower = Follower(path, window=5)
        first = follower.refresh()
        seen = first.new_records
        before = {key: s.records for key, s in first.streams.items()}
        reads = count_chunk_reads(monkeypatch, path)
        for a, b in [(1, 3), (3, 4), (4, 11), (11, 12), (12, 30), (30, 45)]:
            write_steps(store, rng, range(a, b))
            store.flush()
            reads.clear()
            snap = follower.refresh()
            assert snap.new_records == 4 * (b - a) and snap.writer["status"] == "open"
            assert snap.streams[SPIKES].last_step == b - 1
            rate = snap.streams[SPIKES].records_per_second  # from the second refresh that saw growth on
            assert rate is not None and rate > 0
            seen += snap.new_records
            # The new records come from the chunks that hold them (the first one may be the partly filled
            # chunk that grew), each read once, and so do their steps.
            with spikestore.open(path) as run:
                segments = {key: run[key].segments for key in (SPIKES, VOLTS, GRAD)}
            for key, segs in segments.items():
                new = range(before[key], snap.streams[key].records)
                holder = [next(seg for seg in reversed(segs) if seg.start <= i) for i in new]
                wanted = {(f"{key}/{seg.doc['array']}", (i - seg.start) // seg.chunk_records)
                          for i, seg in zip(new, holder, strict=True)}
                got = [(node, c) for node, c in reads if node.startswith(key + "/seg")]
                assert len(got) == len(set(got)) and set(got) <= wanted and got, (key, got, wanted)
                index = [(node, c) for node, c in reads if node == f"{key}/step"]
                assert len(index) == len(set(index)), index
            before = {key: s.records for key, s in snap.streams.items()}
            reads.clear()
            assert follower.refresh().new_records == 0 and reads == []  # nothing new: nothing decoded
    finally:
        store.close()
    snap = follower.refresh()
    follower.close()
    assert snap.writer["status"] == "closed" and seen + snap.new_records == 45 * 4
    with Follower(path, window=5) as fresh:
        whole = fresh.refresh()
    for key, s in whole.streams.items():
        live = snap.streams[key]
        assert (live.records, live.last_step, live.binary, live.neurons) == (s.records, s.last_step, s.binary,
                                                                             s.neurons)
        np.testing.assert_array_equal(live.steps, s.steps)
        for name in ("rate", "mean", "std", "neuron_rates", "latest"):
            a, b = getattr(live, name), getattr(s, name)
            assert (a is None) == (b is None), name
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=name)
        assert (live.dead_fraction, live.saturated_fraction) == (s.dead_fraction, s.saturated_fraction)
        # Sizes lag while the writer is open; once it closed they are counted at the next refresh.
        assert (live.bytes_on_disk, live.bits_per_spike) == (s.bytes_on_disk, s.bits_per_spike)
    check_snapshot(path, whole, 5)


def test_history_is_bounded_and_each_point_merges_its_steps(tmp_path: Path) -> None:
    path = tmp_path / "long.zarr"
    rng = np.random.default_rng(3)
    steps = np.repeat(np.arange(0, 1500, 3), 2)  # sparse steps, two records each
    f: Follower | None = None
    with spikestore.Store(path, chunk_bytes=4096) as store:
        for i, step in enumerate(steps):
            store.append(SPIKES, (rng.random(8) < rng.random()).astype(np.float32), step=int(step))
            store.append(VOLTS, rng.standard_normal(8).astype(np.float32) * step, step=int(step))
            if i == 350:  # a refresh that sees part of the run, merging points already merged once
                store.flush()
                f = Follower(path, history=50, window=4)
                assert len(f.refresh().streams[SPIKES].steps) <= 50
    assert f is not None
    snap = f.refresh()
    assert snap is not None
    with spikestore.open(path) as run:
        for key in (SPIKES, VOLTS):
            s = snap.streams[key]
            assert 25 <= len(s.steps) <= 50 and np.all(np.diff(s.steps) > 0)
            values, at = records(run, key)
            edges = np.append(s.steps, np.iinfo(np.int64).max)
            for i in range(len(s.steps)):  # point i holds the records of steps steps[i] .. steps[i + 1] - 1
                x = np.concatenate([v for v, t in zip(values, at, strict=True) if edges[i] <= t < edges[i + 1]])
                if s.binary:
                    assert s.rate is not None and s.rate[i] == pytest.approx(np.count_nonzero(x) / x.size)
                else:
                    assert s.mean is not None and s.std is not None
                    assert s.mean[i] == pytest.approx(x.astype(np.float64).mean(), rel=1e-9, abs=1e-9)
                    assert s.std[i] == pytest.approx(x.astype(np.float64).std(), rel=1e-9)
        assert snap.streams[SPIKES].window_steps == 4
    f.close()


def test_a_run_already_open_is_followed_and_left_open(tmp_path: Path) -> None:
    path = tmp_path / "open.zarr"
    with spikestore.Store(path, chunk_bytes=200) as store:
        write_steps(store, np.random.default_rng(4), range(3))
    run = spikestore.open(path)
    with Follower(run) as f:
        assert f.refresh().streams[GRAD].records == 3
    assert len(run[GRAD]) == 3  # still open
    run.close()
    with pytest.raises(InvalidArgumentError, match="window"):
        Follower(path, window=0)
    with pytest.raises(InvalidArgumentError, match="storage_options"):
        Follower(spikestore.open(path), storage_options={"anon": True})


def test_index_entries_of_a_range_read_only_their_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "index.zarr"
    with spikestore.Store(path) as store:
        for step in range(10_000):
            store.append(GRAD, np.float32(step), step=3 * step)
    with spikestore.open(path) as run:
        s = run[GRAD]
        rpc = s.doc["index"]["chunk_records"]
        reads = count_chunk_reads(monkeypatch, path)
        got = s.index("step", 9000, 9100)
        np.testing.assert_array_equal(got, 3 * np.arange(9000, 9100))
        assert sorted(set(reads)) == [(f"{GRAD}/step", c) for c in range(9000 // rpc, 9099 // rpc + 1)]
        np.testing.assert_array_equal(s.index("time", -5), s.times[-5:])
        np.testing.assert_array_equal(s.index("call", 20, 10), s.calls[:0])


@pytest.mark.slow
def test_a_url_is_followed_as_a_local_path(url: object, tmp_path: Path) -> None:
    from spikestore.backends import StoreURL

    assert isinstance(url, StoreURL)
    local = tmp_path / "local.zarr"
    for where, options in ((str(url), {"storage_options": url.storage_options, "lock": False}), (local, {})):
        with spikestore.Store(where, chunk_bytes=1000, **options) as store:
            write_steps(store, np.random.default_rng(5), range(3))
    with Follower(str(url), storage_options=url.storage_options) as remote, Follower(local) as here:
        got, want = remote.refresh(), here.refresh()
    assert got.path == str(url) and got.new_records == want.new_records == 12
    for key, s in want.streams.items():
        np.testing.assert_array_equal(got.streams[key].steps, s.steps)
        np.testing.assert_array_equal(got.streams[key].latest, s.latest)
        for name in ("rate", "mean", "std", "neuron_rates"):
            a, b = getattr(got.streams[key], name), getattr(s, name)
            assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), (key, name)


def test_a_failed_stream_and_the_writer_status_are_shown(tmp_path: Path) -> None:
    import torch
    from helpers import writer_held

    path = tmp_path / "failed.zarr"
    store = spikestore.Store(path)
    store.append(SPIKES, np.ones((2, NEURONS), np.float32), step=0)
    with writer_held(store):
        t = torch.rand(64, dtype=torch.float64)
        store.append(GRAD, t, copy=False, step=0)
        t.mul_(2)  # changed before the writer stored it: the stream fails
    with pytest.raises(spikestore.StreamFailedError):
        store.flush()
    store.close()
    with Follower(path) as f:
        snap = f.refresh()
    assert list(snap.failed) == [GRAD] and "InPlaceModificationError" in snap.failed[GRAD]
    assert snap.writer["status"] == "closed" and snap.dropped == 0
    assert snap.streams[GRAD].records == 0 and snap.streams[GRAD].last_step is None
    s = snap.streams[SPIKES]
    assert s.saturated_fraction == 1.0 and s.dead_fraction == 0.0 and s.rate is not None and s.rate.tolist() == [1.0]


@pytest.mark.parametrize("history", [1000, 2])
def test_records_of_the_last_point_that_come_later_join_it(tmp_path: Path, history: int) -> None:
    """A step split over two refreshes is one point (and, once steps merge, so is a bin of steps)."""
    path = tmp_path / "split.zarr"
    rng = np.random.default_rng(6)
    store = spikestore.Store(path)
    f = Follower(path, history=history, window=2)
    try:
        for step in range(8):
            for _ in range(2):
                store.append(SPIKES, spikes(rng, 4), step=step)
                store.append(VOLTS, rng.standard_normal(5).astype(np.float32) + step, step=step)
                store.flush()
                snap = f.refresh()
                assert snap.new_records == 2
    finally:
        store.close()
    with spikestore.open(path) as run:
        for key in (SPIKES, VOLTS):
            s = snap.streams[key]
            assert len(s.steps) == (8 if history == 1000 else 2) and np.all(np.diff(s.steps) > 0)
            values, at = records(run, key)
            edges = np.append(s.steps, 8)
            for i in range(len(s.steps)):
                x = np.concatenate([v.reshape(-1) for v, t in zip(values, at, strict=True)
                                    if edges[i] <= t < edges[i + 1]]).astype(np.float64)
                points = s.rate if s.binary else s.mean
                assert points is not None
                got = points[i]
                assert got == pytest.approx(np.count_nonzero(x) / x.size if s.binary else x.mean(), rel=1e-12)
    f.close()
