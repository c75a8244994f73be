"""Exports read back with each ecosystem's own reader match the store."""

from __future__ import annotations

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import spikestore
from spikestore.export import export, to_hdf5, to_npz, to_nwb, to_parquet


@pytest.fixture(scope="module", params=["zarr", "hdf5"])
def store(request, tmp_path_factory):
    """Multi-step spikes with a short last batch, voltages, norms, and single-step spikes (each backend)."""
    path = tmp_path_factory.mktemp("exp") / {"zarr": "run.zarr", "hdf5": "run.h5"}[request.param]
    g = torch.Generator().manual_seed(0)
    with spikestore.Store(path, chunk_bytes=3000, metadata={"task": "export test"}) as st:
        for step in range(9):
            st.set_step(step)
            n = 3 if step == 8 else 4
            st.append("output/lif", (torch.rand(5, n, 2, 3, generator=g) < 0.3).float())
            st.append("v_seq/lif", torch.randn(5, n, 6, generator=g))
            st.append("grad_input/lif", torch.rand((), generator=g))
            for _ in range(2):  # single-step layer: two calls a step
                st.append("output/s", (torch.rand(4, 7, generator=g) < 0.5).float())
        st.set_stream_info("output/lif", selection={"step_mode": "m", "batch_axis": 1})
        st.set_stream_info("output/s", selection={"step_mode": "s", "batch_axis": 0})
    return path


def all_records(run, key):
    return [run[key][i] for i in range(len(run[key]))]


def test_npz(store, tmp_path):
    done = []
    out = to_npz(store, tmp_path / "x.npz", progress=lambda d, t: done.append((d, t)))
    assert done[-1][0] == done[-1][1] == 9 * 3 + 18
    z = np.load(out, allow_pickle=False)
    run = spikestore.open(store)
    np.testing.assert_array_equal(z["output/lif@0"], np.stack(all_records(run, "output/lif")[:8]))
    assert z["output/lif@0"].dtype == bool and str(z["output/lif@0.dtype"]) == "float32"  # spikes: bool + dtype
    np.testing.assert_array_equal(z["output/lif@1"][0], run["output/lif"][8])
    np.testing.assert_array_equal(z["output/lif.segment"], [0] * 8 + [1])
    np.testing.assert_array_equal(z["grad_input/lif"], np.stack(all_records(run, "grad_input/lif")))
    np.testing.assert_array_equal(z["output/s.calls"], [0, 1] * 9)
    part = np.load(to_npz(store, tmp_path / "p.npz", streams=["v_seq/*"], steps="2:5"), allow_pickle=False)
    assert sorted(part.keys()) == ["v_seq/lif", "v_seq/lif.calls", "v_seq/lif.dtype", "v_seq/lif.steps"]
    np.testing.assert_array_equal(part["v_seq/lif.steps"], [2, 3, 4])
    np.testing.assert_array_equal(part["v_seq/lif"], np.stack(all_records(run, "v_seq/lif")[2:5]))


def test_hdf5_readable_with_h5py_alone(store, tmp_path):
    out = to_hdf5(store, tmp_path / "x.h5")
    run = spikestore.open(store)
    with h5py.File(out, "r") as f:
        g = f["output/lif"]
        assert g.attrs["stream"] == "output/lif" and g.attrs["layer"] == "lif"
        np.testing.assert_array_equal(g["seg000000"][:], np.stack(all_records(run, "output/lif")[:8]))
        np.testing.assert_array_equal(g["seg000001"][0], run["output/lif"][8])
        np.testing.assert_array_equal(g["step"][:], np.arange(9))
        np.testing.assert_array_equal(f["v_seq/lif/seg000000"][3], run["v_seq/lif"][3])
        assert f["output/lif/seg000000"].dtype == np.float32


def test_parquet_one_row_per_spike(store, tmp_path):
    out = to_parquet(store, tmp_path / "pq")
    run = spikestore.open(store)
    spikes = pq.read_table(out / "spikes.parquet").to_pandas()
    lif = spikes[spikes.layer == "lif"]
    assert len(lif) == sum(int(r.sum()) for r in all_records(run, "output/lif"))
    r3 = run["output/lif"][3]  # [T=5, N=4, 2, 3]
    t, b, n1, n2 = np.nonzero(r3)
    got = lif[lif.step == 3][["t", "batch", "neuron"]].to_numpy()
    np.testing.assert_array_equal(got, np.stack([t, b, n1 * 3 + n2], axis=1))
    single = spikes[spikes.layer == "s"]
    rec = run["output/s"][5]  # step 2, call 1
    b, n = np.nonzero(rec)
    rows = single[(single.step == 2) & (single.call == 1)]
    np.testing.assert_array_equal(rows[["batch", "neuron"]].to_numpy(), np.stack([b, n], axis=1))
    assert set(rows.t) == {1}  # single-step: the time bin is the call
    values = pq.read_table(out / "values-float32.parquet").to_pandas()
    v = values[(values.quantity == "v_seq") & (values.step == 6)].iloc[0]
    np.testing.assert_array_equal(np.asarray(v["values"]).reshape(v["shape"]), run["v_seq/lif"][6])


def test_parquet_keeps_every_dtype_exact(tmp_path):
    # One table per value dtype: a float64 stream after a float32 one was cast to float32, and a
    # complex stream failed the whole export.
    path = tmp_path / "mixed.zarr"
    records = {"a/f32": np.array([1.5, 2.25], np.float32), "b/f64": np.array([1 / 3, 2 / 3]),
               "c/i64": np.array([2**40 + 1, -5], np.int64), "d/c64": np.array([1 + 2j, 3 - 1j], np.complex64)}
    with spikestore.Store(path) as st:
        for key, value in records.items():
            st.append(key, value)
    out = to_parquet(path, tmp_path / "mixed")
    assert sorted(p.name for p in out.iterdir()) == [
        "values-complex64.parquet", "values-float32.parquet", "values-float64.parquet", "values-int64.parquet"]
    for key, value in records.items():
        table = pq.read_table(out / f"values-{value.dtype.name}.parquet").to_pydict()
        if value.dtype.kind == "c":
            got = np.array(table["real"][0], np.float32) + 1j * np.array(table["imag"][0], np.float32)
        else:
            got = np.array(table["values"][0], value.dtype)
        assert table["layer"] == [key.split("/")[1]]
        np.testing.assert_array_equal(got, value)
        assert got.dtype == value.dtype or value.dtype.kind == "c"


def test_nwb_round_trip_and_inspector(store, tmp_path):
    from nwbinspector import Importance, inspect_nwbfile
    from pynwb import NWBHDF5IO

    out = to_nwb(store, tmp_path / "x.nwb", dt=0.002)
    run = spikestore.open(store)
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        lif = units[units.layer == "lif"]
        assert len(lif) == 4 * 6  # batch (largest) x neurons
        # Unit (batch 1, neuron 4) of layer lif: its spikes across all steps.
        unit = lif[(lif.batch == 1) & (lif.neuron == 4)].iloc[0]
        want = []
        for step, rec in enumerate(all_records(run, "output/lif")):
            for t in np.flatnonzero(rec.reshape(5, rec.shape[1], -1)[:, 1, 4]):
                want.append((step * 5 + t) * 0.002)
        np.testing.assert_allclose(np.sort(unit.spike_times), want)
        assert int(sum(len(x) for x in units.spike_times)) == sum(
            int(r.sum()) for k in ("output/lif", "output/s") for r in all_records(run, k))
        v = nwb.processing["misc"]["v_seq.lif"]
        assert v.data.shape == (9 * 5, 4, 6)
        np.testing.assert_array_equal(v.data[5:10], run["v_seq/lif"][1])
        assert np.isnan(v.data[-1][3]).all()  # the short last batch is NaN-padded
        np.testing.assert_allclose(v.get_timestamps()[:6], np.arange(6) * 0.002)
        assert '"task": "export test"' in nwb.notes
    critical = [m for m in inspect_nwbfile(nwbfile_path=str(out)) if m.importance == Importance.CRITICAL]
    assert critical == []


def test_bad_arguments_are_clear(store, tmp_path):
    with pytest.raises(spikestore.StreamNotFoundError, match="nothing"):
        export(store, tmp_path / "a.npz", "npz", streams=["nothing/*"])
    with pytest.raises(spikestore.InvalidArgumentError, match="A:B"):
        export(store, tmp_path / "a.npz", "npz", steps="3-4")
    with pytest.raises(spikestore.InvalidArgumentError, match="format"):
        export(store, tmp_path / "a.x", "csv")
    (tmp_path / "exists.npz").write_bytes(b"")
    with pytest.raises(spikestore.InvalidArgumentError, match="overwrite"):
        export(store, tmp_path / "exists.npz", "npz")


# -- a failed export leaves nothing behind ------------------------------------------------
OUTPUTS = {"npz": "x.npz", "hdf5": "x.h5", "parquet": "pq", "nwb": "x.nwb"}


class Interrupted(Exception):
    """Raised by a progress callback to stop an export half way."""


def _older_output(out):
    """An output of an earlier export: a file, or a folder for Parquet."""
    if out.suffix:
        out.write_bytes(b"older export")
    else:
        out.mkdir()
        (out / "spikes.parquet").write_bytes(b"older export")


def _is_older_output(out):
    return (out if out.suffix else out / "spikes.parquet").read_bytes() == b"older export"


@pytest.mark.parametrize("fmt", list(OUTPUTS))
@pytest.mark.parametrize("when", ["first block", "last block"])
def test_a_failed_export_leaves_no_partial_file_and_keeps_the_older_output(store, tmp_path, fmt, when):
    """A failure after the first block (nothing there before), or after the last one (while the
    file is still open, over an older output): the folder ends as it began."""
    out = tmp_path / OUTPUTS[fmt]
    if when == "last block":
        _older_output(out)
    before = sorted(p.name for p in tmp_path.iterdir())
    calls, writing = [], []

    def progress(done, total):
        calls.append(done)
        if when == "first block" or done == total:
            writing.append(any(".partial" in p.name for p in tmp_path.iterdir()))
            raise Interrupted(f"stopped at {done} of {total} records")

    with pytest.raises(Interrupted):
        export(store, out, fmt, progress=progress, overwrite=True)
    assert len(calls) == 1 or when == "last block"
    assert writing == [True] or when == "first block"  # the failure came while the output was open
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no *.partial, no scratch file
    if when == "last block":
        assert _is_older_output(out)
    export(store, out, fmt, overwrite=True)  # and a retry replaces the older output
    assert not out.exists() or not _is_older_output(out)
