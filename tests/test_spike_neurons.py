"""The spike codec's neurons mode (mode 4) and the entropy bounds it is measured against.

The bounds are checked against formulas written out here; the codec's
output against those bounds, against today's other modes, and (bytes)
against the plain-Python decoder a reader without numba runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spikestore
from spikestore.codecs._bounds import SpikeCounts
from spikestore.codecs._spikes import MODES, NEURONS_FROM_LEVEL, decode_spikes, encode_spikes
from spikestore.errors import ChecksumError

NEURONS = MODES.index("neurons")


def lif_like(shape: tuple[int, ...], time_axis: int, seed: int, reset: float = 0.2) -> np.ndarray:
    """Spikes with a rate per neuron (most nearly silent), times ``reset`` for a step after each spike."""
    rng = np.random.default_rng(seed)
    rate = 0.5 * rng.random(shape[-1]) ** 3
    steps = np.moveaxis(np.zeros(shape, dtype=bool), time_axis, 0)
    for t in range(steps.shape[0]):
        steps[t] = rng.random(steps.shape[1:]) < (np.where(steps[t - 1], reset * rate, rate) if t else rate)
    return np.moveaxis(steps, 0, time_axis)


def _h(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-300, 1 - 1e-16)
    return np.where((p <= 1e-300) | (p >= 1 - 1e-16), 0.0, -(p * np.log2(p) + (1 - p) * np.log2(1 - p)))


def test_bounds_match_the_formulas_on_multi_step_records():
    x = lif_like((30, 6, 5, 12), 1, 0)  # records (time, batch, neurons)
    counts = SpikeCounts(("time", "batch", "neuron"))
    for record in x:
        counts.add(record.astype(np.float32))
    b = counts.bounds()
    p = x.mean()
    assert b["iid"] == pytest.approx(x.size * _h(np.array(p)))
    per = x.mean(axis=(0, 1, 2))
    assert b["neuron"] == pytest.approx(float((x.shape[0] * 6 * 5 * _h(per)).sum()))
    prev = np.zeros_like(x)
    prev[:, 1:] = x[:, :-1]  # each record's first step follows silence
    cond = 0.0
    for j in range(12):
        for c in (0, 1):
            sel = prev[..., j] == c
            if sel.any():
                cond += sel.sum() * float(_h(np.array(x[..., j][sel].mean())))
    assert b["conditional"] == pytest.approx(cond)
    assert b["conditional"] < b["neuron"] < b["iid"]


def test_bounds_of_step_by_step_records_follow_the_previous_record():
    x = lif_like((400, 3, 7), 0, 1)  # records (batch, neurons), one per time step
    counts = SpikeCounts(("batch", "neuron"))
    for record in x:
        counts.add(record)
    prev = np.zeros_like(x)
    prev[1:] = x[:-1]
    both = (x & prev).sum(axis=(0, 1))
    np.testing.assert_array_equal(counts.both, both)
    np.testing.assert_array_equal(counts.after, prev.sum(axis=(0, 1)))
    assert counts.spikes == x.sum() and counts.total == x.size


@pytest.mark.parametrize(("shape", "time_axis", "row_bits"), [
    ((64, 8, 32, 40), 1, None),  # multi-step records (time, batch, neurons)
    ((2000, 16, 20), 0, 20),  # step-by-step records (batch, neurons), padded rows
    ((4000, 100), 0, 100),  # records of one sample
])
def test_lif_like_spikes_are_coded_within_5_percent_of_the_conditional_bound(shape, time_axis, row_bits):
    x = lif_like(shape, time_axis, 3)
    counts = SpikeCounts({4: ("time", "batch", "neuron"), 3: ("batch", "neuron"), 2: ("neuron",)}[len(shape)])
    for record in x:
        counts.add(record)
    packed = np.packbits(x, axis=-1, bitorder="little")
    enc = encode_spikes(packed, NEURONS_FROM_LEVEL, row_bits=row_bits)
    assert enc[1] == NEURONS
    np.testing.assert_array_equal(decode_spikes(enc), packed.reshape(-1))
    assert 8 * len(enc) <= 1.05 * counts.bounds()["conditional"]
    assert len(enc) < 0.9 * len(encode_spikes(packed.reshape(-1), row_bits=row_bits))  # what the gap modes do


@pytest.mark.parametrize("p", [0.3, 0.1, 0.02, 0.004])
def test_iid_spikes_are_never_coded_larger_than_by_the_other_modes(p):
    packed = np.packbits(np.random.default_rng(5).random((256, 16, 128)) < p, axis=-1, bitorder="little")
    assert len(encode_spikes(packed, NEURONS_FROM_LEVEL)) <= len(encode_spikes(packed.reshape(-1), NEURONS_FROM_LEVEL))


def test_below_its_level_the_neurons_mode_is_never_tried():
    packed = np.packbits(lif_like((64, 8, 32, 40), 1, 3), axis=-1, bitorder="little")
    assert encode_spikes(packed, NEURONS_FROM_LEVEL)[1] == NEURONS
    assert encode_spikes(packed)[1] != NEURONS  # the writer's default level: the fast modes only


@settings(max_examples=60, deadline=None)
@given(records=st.integers(1, 200), batch=st.integers(1, 6), width=st.integers(1, 70),
       reset=st.sampled_from([0.0, 0.3, 1.0, 3.0]), seed=st.integers(0, 2**32 - 1),
       padded=st.booleans(), silent_tail=st.integers(0, 50))
def test_round_trip_of_chunk_shaped_spikes(records, batch, width, reset, seed, padded, silent_tail):
    x = lif_like((records + silent_tail, batch, width), 0, seed, reset)
    x[records:] = False  # a last chunk: rows past the records are zero
    packed = np.packbits(x, axis=-1, bitorder="little")
    enc = encode_spikes(packed, NEURONS_FROM_LEVEL, row_bits=width if padded and width % 8 else None)
    np.testing.assert_array_equal(decode_spikes(enc), packed.reshape(-1))


def test_a_set_padding_bit_is_coded_as_a_real_bit():
    x = lif_like((3000, 4, 12), 0, 6)
    packed = np.packbits(x, axis=-1, bitorder="little")
    packed[17, 2, -1] |= 0x80  # bit 15 of a row of 12: not padding after all
    enc = encode_spikes(packed, NEURONS_FROM_LEVEL, row_bits=12)
    assert enc[1] == NEURONS
    np.testing.assert_array_equal(decode_spikes(enc), packed.reshape(-1))


def test_the_plain_python_decoder_reads_the_same_bits(monkeypatch):
    from spikestore.codecs import _packing as packing

    x = lif_like((300, 8, 21), 0, 7)
    packed = np.packbits(x, axis=-1, bitorder="little")
    enc = encode_spikes(packed, NEURONS_FROM_LEVEL, row_bits=21)
    assert enc[1] == NEURONS
    monkeypatch.setattr(packing, "KERNELS", False)
    np.testing.assert_array_equal(decode_spikes(enc), packed.reshape(-1))
    # without numba the encoder does not try it
    assert encode_spikes(packed, NEURONS_FROM_LEVEL, row_bits=21)[1] != NEURONS
    with pytest.raises(ChecksumError, match="range coder"):
        decode_spikes(enc[:-1])


def test_a_store_of_a_lif_like_layer_holds_neuron_coded_chunks(tmp_path):
    x = lif_like((300, 8, 16, 64), 1, 8).astype(np.float32)
    with spikestore.Store(tmp_path / "s.zarr", compression_level=NEURONS_FROM_LEVEL) as store:
        for record in x:
            store.append("output/lif", record)
    s = spikestore.open(tmp_path / "s.zarr")["output/lif"]
    np.testing.assert_array_equal(np.stack([s[i] for i in range(len(s))]), x)
    chunk = next(iter((tmp_path / "s.zarr" / "output" / "lif" / s.segments[0].doc["array"]).glob("c.0*")))
    assert chunk.read_bytes()[1] == NEURONS
    import zarr  # plain zarr decodes it too (the codec's entry point)

    packed = zarr.open_array(tmp_path / "s.zarr" / "output" / "lif" / s.segments[0].doc["array"], mode="r")[:]
    np.testing.assert_array_equal(np.unpackbits(packed[:len(x)], axis=-1, count=64, bitorder="little"), x)


def test_adding_records_in_blocks_or_packed_counts_the_same():
    for dims, x in ((("time", "batch", "neuron"), lif_like((40, 6, 5, 13), 1, 9)),
                    (("batch", "neuron"), lif_like((90, 5, 13), 0, 10))):
        one, blocks, packed = SpikeCounts(dims), SpikeCounts(dims), SpikeCounts(dims)
        for record in x:
            one.add(record.astype(np.float32))
        for lo in range(0, len(x), 17):
            blocks.add_records(x[lo:lo + 17])
            packed.add_packed(np.packbits(x[lo:lo + 17], axis=-1, bitorder="little"), 13)
        for c in (blocks, packed):
            for name in ("values", "ones", "after", "both"):
                np.testing.assert_array_equal(getattr(c, name), getattr(one, name))


def test_info_reports_bits_per_spike_and_the_ratio_to_each_bound(tmp_path):
    from click.testing import CliRunner

    from spikestore._tools.summary import spike_coding
    from spikestore.cli import main

    x = lif_like((40, 8, 16, 24), 1, 11).astype(np.float32)
    path = tmp_path / "s.zarr"
    with spikestore.Store(path) as store:
        store.set_stream_info("output/lif", selection={"step_mode": "m", "batch_axis": 1})  # (time, batch, neuron)
        for record in x:
            store.append("output/lif", record)
            store.append("v/lif", record * 0.5)  # not spikes: no row
    run = spikestore.open(path)
    assert run["output/lif"].dims == ("time", "batch", "neuron")
    seen: list[tuple[int, int]] = []
    (row,) = spike_coding((run[k] for k in run.streams), max_values=16 * 8 * 16 * 24,
                          progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 1 and seen[-1] == (len(x), len(x))  # the bits records, read a few at a time
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})
    counts = SpikeCounts(("time", "batch", "neuron"))
    for record in x:
        counts.add(record)
    data = sum(seg.nbytes() for seg in run["output/lif"].segments)
    assert (row["stream"], row["spikes"], row["bytes"]) == ("output/lif", int(x.sum()), data)
    assert row["bits_per_spike"] == pytest.approx(8 * data / x.sum())
    for name, bits in counts.bounds().items():
        assert row[f"over_{name}"] == pytest.approx(8 * data / bits)
    out = CliRunner().invoke(main, ["info", str(path)])
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if ln.startswith("output/lif") and "x" in ln.split()[-1])
    assert line.split()[-3:] == [f"{row[f'over_{k}']:.3f}x" for k in ("iid", "neuron", "conditional")]
    quick = CliRunner().invoke(main, ["info", str(path), "--no-bounds"])
    assert quick.exit_code == 0 and "vs conditional" not in quick.output and "vs conditional" in out.output


@pytest.mark.parametrize("step_by_step", [False, True])
def test_the_live_summary_reports_the_bits_over_each_bound(tmp_path, step_by_step):
    from spikestore.live import Follower

    path = tmp_path / "s.zarr"
    if step_by_step:  # records (batch, neuron), one per time step
        x, selection, dims = lif_like((120, 4, 13), 0, 12), {"step_mode": "s", "batch_axis": 0}, ("batch", "neuron")
    else:
        x, selection, dims = lif_like((30, 5, 4, 13), 1, 12), {"step_mode": "m", "batch_axis": 1}, \
            ("time", "batch", "neuron")
    with spikestore.Store(path, chunk_bytes=64) as store:  # several chunks: the follower reads them one by one
        store.set_stream_info("output/lif", selection=selection)
        for record in x:
            store.append("output/lif", record.astype(np.float32))
    counts = SpikeCounts(dims)
    counts.add_records(x)
    run = spikestore.open(path)
    bits = 8 * sum(seg.nbytes() for seg in run["output/lif"].segments)
    with Follower(path, window=5) as f:
        summary = f.refresh().streams["output/lif"]
    assert summary.bits_over_bounds is not None
    for name, bound in counts.bounds().items():
        assert summary.bits_over_bounds[name] == pytest.approx(bits / bound)
