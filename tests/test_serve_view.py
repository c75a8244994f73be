"""The JSON view of ``spikestore serve`` (what a tab draws), checked against the records written.

No browser here: tests/test_serve.py drives the page itself.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

import spikestore
from spikestore.errors import InvalidArgumentError
from spikestore.live._serve_data import PageState
from spikestore.live._serve_view import MAX_TRACES, Choice, page_view
from spikestore.plot import short_batch_steps

THRESHOLD = 1.0


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """A finished run: multi-step spikes and voltages ``[T=6, B=3, N=20]``, four steps; the last step's records."""
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("view") / "run.zarr"
    with spikestore.Store(path, mode="w") as store:
        for key in ("v_seq/lif", "output/lif"):  # records of a multi-step monitor: [time, batch, neuron]
            store.set_stream_info(key, selection={"step_mode": "m", "batch_axis": 1})
        every = []
        for step in range(4):
            store.set_step(step)
            v = rng.normal(0.7, 0.4, (6, 3, 20)).astype(np.float32)
            v[0, 0, 0] = np.nan  # a value JSON cannot carry
            spikes = (v >= THRESHOLD).astype(np.float32)
            store.append("v_seq/lif", v)
            store.append("output/lif", spikes)
            every.append(spikes)
    return {"path": np.asarray(str(path)), "v": v, "spikes": spikes, "all_spikes": np.stack(every)}


def _view(written: dict[str, np.ndarray], **choice: object) -> dict[str, object]:
    state = PageState(str(written["path"]))
    try:
        data = state.refresh()
        view = page_view(data, Choice(**choice), THRESHOLD)  # type: ignore[arg-type]
    finally:
        state.close()
    return json.loads(json.dumps(view, allow_nan=False))  # what the page receives


def _unpack(raster: dict[str, object]) -> np.ndarray:
    shape = tuple(raster["shape"])  # type: ignore[arg-type]
    raw = np.frombuffer(base64.b64decode(raster["bits"]), dtype=np.uint8)  # type: ignore[arg-type]
    return np.unpackbits(raw)[: int(np.prod(shape))].reshape(shape).astype(bool)


def test_raster_carries_the_chosen_frame_as_bits(written: dict[str, np.ndarray]) -> None:
    view = _view(written, sample=2, time=(1, 4), neurons=(5, 14))
    raster = view["raster"]
    assert isinstance(raster, dict)
    expected = written["spikes"][1:5, 2, 5:15] > 0
    np.testing.assert_array_equal(_unpack(raster), expected)
    assert raster["count"] == int(expected.sum()) and raster["step"] == 3
    assert (raster["t0"], raster["t1"], raster["n0"], raster["n1"]) == (1, 4, 5, 14)


def test_windows_past_the_record_are_clamped(written: dict[str, np.ndarray]) -> None:
    raster = _view(written, sample=99, time=(4, 1000), neurons=(30, 40))["raster"]
    assert isinstance(raster, dict)
    assert (raster["sample"], raster["t0"], raster["t1"], raster["n0"], raster["n1"]) == (2, 4, 5, 19, 19)
    np.testing.assert_array_equal(_unpack(raster), written["spikes"][4:6, 2, 19:20] > 0)


def test_voltage_traces_and_spike_marks_come_from_the_store(written: dict[str, np.ndarray]) -> None:
    trace = _view(written, sample=0)["trace"]
    assert isinstance(trace, dict)
    v = written["v"][:, 0, :MAX_TRACES]
    assert len(trace["traces"]) == MAX_TRACES
    assert trace["traces"][0][0] is None  # NaN travels as null
    np.testing.assert_allclose(np.array(trace["traces"], dtype=float)[1:], v.T[1:], rtol=1e-5)
    assert trace["marks"] == [np.flatnonzero(written["spikes"][:, 0, k]).tolist() for k in range(MAX_TRACES)]
    assert trace["source"] == "from output/lif"


def test_heat_map_is_one_byte_a_cell_scaled_to_its_maximum(written: dict[str, np.ndarray]) -> None:
    heat = _view(written)["heat"]
    assert isinstance(heat, dict)
    cells = np.frombuffer(base64.b64decode(heat["cells"]), dtype=np.uint8).reshape(heat["rows"], heat["columns"])
    assert heat["rows"] == 20 and heat["lo"] == 0 and heat["hi"] == 3
    last = written["spikes"].reshape(-1, 20).mean(axis=0)  # each neuron's rate over the last step
    np.testing.assert_allclose(cells[:, -1] / 255 * heat["high"], last, atol=heat["high"] / 255 + 1e-4)
    assert cells.max() == 255


def test_choices_from_a_query_are_checked() -> None:
    assert Choice.from_query({"spikes": "output/lif", "sample": "2", "t0": "3", "t1": "", "n1": "7"}) == \
        Choice("output/lif", None, 2, (3, 1 << 30), (0, 7))
    assert Choice.from_query({"t0": "9", "t1": "2"}).time == (9, 9)
    with pytest.raises(InvalidArgumentError, match="sample='x': expected a whole number"):
        Choice.from_query({"sample": "x"})
    with pytest.raises(InvalidArgumentError, match="n0=-1: expected 0 or more"):
        Choice.from_query({"n0": "-1"})


def test_stream_list_reports_bits_per_spike_and_the_ratio_to_the_conditional_bound(
        written: dict[str, np.ndarray]) -> None:
    from spikestore.codecs._bounds import SpikeCounts

    rows = {r["key"]: r for r in _view(written)["streams"]}  # type: ignore[union-attr]
    run = spikestore.open(str(written["path"]))
    data = 8 * sum(seg.nbytes() for seg in run["output/lif"].segments)
    spikes = written["all_spikes"]
    counts = SpikeCounts(("time", "batch", "neuron"))
    for record in spikes:
        counts.add(record)
    assert rows["output/lif"]["bits_per_spike"] == pytest.approx(data / spikes.sum(), rel=1e-3)
    assert rows["output/lif"]["over_conditional"] == pytest.approx(data / counts.bounds()["conditional"], rel=1e-3)
    assert rows["v_seq/lif"]["bits_per_spike"] is None and rows["v_seq/lif"]["over_conditional"] is None


def test_unknown_streams_fall_back_to_the_first_of_their_kind(written: dict[str, np.ndarray]) -> None:
    view = _view(written, spikes="output/none", voltage="output/lif")
    assert view["spikes"] == "output/lif" and view["voltage"] == "v_seq/lif"
    assert [s["key"] for s in view["streams"]] == ["v_seq/lif", "output/lif"]  # type: ignore[union-attr]


def test_short_batches_are_marked_and_followed(tmp_path: Path) -> None:
    """Steps whose records hold a smaller batch; a refresh finds a new one (and more records of it)."""
    path = tmp_path / "run.zarr"
    rng = np.random.default_rng(5)
    batches = {0: 4, 1: 4, 2: 3, 3: 4}
    with spikestore.Store(path, mode="w") as store:
        store.set_stream_info("output/lif", selection={"step_mode": "m", "batch_axis": 1})

        def write(step: int, batch: int) -> None:
            store.set_step(step)
            store.append("output/lif", (rng.random((2, batch, 5)) < 0.3).astype(np.float32))
            store.flush()

        for step, batch in batches.items():
            write(step, batch)
        state = PageState(path)
        try:
            assert page_view(state.refresh(), Choice(), THRESHOLD)["short_steps"] == [2]
            write(4, 2)  # a new segment of a smaller batch
            assert page_view(state.refresh(), Choice(), THRESHOLD)["short_steps"] == [2, 4]
            write(5, 2)  # more records in that last, short segment
            assert page_view(state.refresh(), Choice(), THRESHOLD)["short_steps"] == [2, 4, 5]
        finally:
            state.close()
    run = spikestore.open(path)
    assert list(short_batch_steps(run)) == [2, 4, 5]  # the plots' rule, read whole
