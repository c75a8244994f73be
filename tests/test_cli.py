"""The real console script, run in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import spikestore

EXE = shutil.which("spikestore") or str(__import__("pathlib").Path(sys.executable).parent / "spikestore")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "run.zarr"
    with spikestore.Store(path, chunk_bytes=50, metadata={"lr": 0.1}) as st:
        for step in range(6):
            st.set_step(step)
            st.append("output/fc", (torch.rand(4, 3, 10) < 0.2).float())
            st.append("v/fc", torch.randn(4, 3, 10))
    return path


@pytest.mark.slow
def test_info(store):
    r = cli("info", str(store))
    assert r.returncode == 0, r.stderr
    assert "writer     closed" in r.stdout and "output/fc" in r.stdout and "lr=0.1" in r.stdout


def test_storage_options_from_the_environment_leave_local_paths_alone(store):
    """$SPIKESTORE_STORAGE_OPTIONS is set once for URLs (docs/cli.md); local stores go on working. The same
    options given on the command line for a local path are still a usage error."""
    from click.testing import CliRunner

    from spikestore.cli import main

    runner = CliRunner(env={"SPIKESTORE_STORAGE_OPTIONS": '{"anon": true}'})
    r = runner.invoke(main, ["info", str(store)])
    assert r.exit_code == 0 and "output/fc" in r.output, r.output
    r = runner.invoke(main, ["info", str(store), "--storage-options", '{"anon": true}'])
    assert r.exit_code == 2 and "storage_options apply to stores behind a URL" in r.output, r.output


@pytest.mark.slow
def test_verify_intact_and_damaged(store):
    r = cli("verify", str(store))
    assert r.returncode == 0 and "intact" in r.stdout
    (store / "output/fc/seg000000/c.1.0.0.0").unlink()
    chunk = store / "v/fc/seg000000/c.0.0.0.0"
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    r = cli("verify", str(store))
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in r.stdout + r.stderr
    assert any("missing" in line and "output/fc" in line for line in lines)
    assert any("corrupt" in line and "v/fc" in line for line in lines)


@pytest.mark.slow
def test_verify_on_something_that_is_not_a_store(tmp_path):
    (tmp_path / "junk").mkdir()
    r = cli("verify", str(tmp_path / "junk"))
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout


@pytest.mark.slow
def test_export_and_errors(store, tmp_path):
    out = tmp_path / "o.npz"
    r = cli("export", str(store), str(out), "--format", "npz", "--streams", "output/*", "--steps", "1:3")
    assert r.returncode == 0, r.stderr
    z = np.load(out, allow_pickle=False)
    np.testing.assert_array_equal(z["output/fc"], spikestore.open(store)["output/fc"][1:3])
    r = cli("export", str(store), str(out), "--format", "npz")
    assert r.returncode == 1 and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    r = cli("export", str(store), str(tmp_path / "x"), "--format", "csv")
    assert r.returncode == 2 and "csv" in r.stderr
    r = cli("export", str(store), str(tmp_path / "y.npz"), "--format", "npz", "--streams", "nope")
    assert r.returncode == 1 and "nope" in r.stderr
    r = cli("info", str(tmp_path / "missing"))
    assert r.returncode == 2
    for out in (tmp_path / "no" / "such" / "o.nwb", tmp_path / "o.npz" / "inside.npz"):  # no folder, a file
        r = cli("export", str(store), str(out))
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and f"folder {out.parent} does not exist" in r.stderr, r.stderr


@pytest.mark.slow
def test_plot_writes_images(tmp_path):
    from PIL import Image

    path = tmp_path / "run.zarr"
    with spikestore.Store(path) as st:
        for step in range(4):
            st.set_step(step)
            st.append("output/fc", (torch.rand(6, 3, 20) < 0.3).float())
            st.append("v_seq/fc", torch.randn(6, 3, 20))
            st.append("grad_input/fc", torch.rand(()))
        st.set_stream_info("output/fc", selection={"step_mode": "m", "batch_axis": 1})
        st.set_stream_info("v_seq/fc", selection={"step_mode": "m", "batch_axis": 1})
    for kind, extra in (("raster", ["--stream", "output/fc"]), ("rates", []), ("grad-norms", []),
                        ("voltage", ["--stream", "v_seq/fc"])):
        out = tmp_path / f"{kind}.png"
        r = cli("plot", str(path), "--kind", kind, *extra, "--out", str(out))
        assert r.returncode == 0, r.stderr
        w, h = Image.open(out).size
        assert w > 200 and h > 100
    r = cli("plot", str(path), "--kind", "voltage", "--stream", "output/fc", "--out", str(tmp_path / "v.png"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and not (tmp_path / "v.png").exists()
    assert "spikes" in r.stderr and "--kind raster" in r.stderr and "v_seq/fc" in r.stderr
    r = cli("plot", str(path), "--kind", "raster", "--out", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "--stream" in r.stderr
    r = cli("plot", str(path), "--kind", "raster", "--stream", "output/nope", "--out", str(tmp_path / "y.png"))
    assert r.returncode == 1 and "output/nope" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_export_format_comes_from_the_suffix(store, tmp_path):
    r = cli("export", str(store), str(tmp_path / "o.npz"))
    assert r.returncode == 0, r.stderr
    assert set(np.load(tmp_path / "o.npz", allow_pickle=False)) >= {"output/fc", "v/fc"}
    r = cli("export", str(store), str(tmp_path / "o.H5"))
    assert r.returncode == 0, r.stderr
    import h5py

    with h5py.File(tmp_path / "o.H5", "r") as f:
        assert "output" in f and "v" in f
    # --format wins over the suffix
    r = cli("export", str(store), str(tmp_path / "o.bin"), "--format", "npz")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "o.bin", allow_pickle=False)["v/fc"].shape == (6, 4, 3, 10)
    r = cli("export", str(store), str(tmp_path / "o.csv"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'.csv'" in r.stderr and ".nwb" in r.stderr and ".hdf5" in r.stderr and "--format" in r.stderr
    assert not (tmp_path / "o.csv").exists()


def _info(*args: str, cwd=None):
    """``spikestore info ARGS`` in this process (click's runner), from ``cwd`` when given."""
    import os

    from click.testing import CliRunner

    from spikestore.cli import main

    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        return CliRunner().invoke(main, ["info", *args])
    finally:
        os.chdir(before)


def _write(path, steps: int, keys=("output/fc",)) -> None:
    with spikestore.Store(path) as st:
        for step in range(steps):
            st.set_step(step)
            for key in keys:
                st.append(key, np.ones((2, 3), np.float32))


def test_info_on_a_folder_lists_the_stores_it_holds(tmp_path):
    import h5py
    import zarr

    runs = tmp_path / "runs"
    runs.mkdir()
    _write(runs / "a.zarr", 3, keys=("output/fc", "v/fc"))
    _write(runs / "b.h5", 5)
    (runs / "sweep").mkdir()
    _write(runs / "sweep" / "c.zarr", 2)
    _write(runs / ".hidden.zarr", 1)                        # hidden: not listed
    zarr.open_group(runs / "other.zarr", mode="w")          # a Zarr group that is no store
    with h5py.File(runs / "plain.h5", "w") as f:            # an HDF5 file that is no store
        f["x"] = [1, 2]
    (runs / "notes.txt").write_text("lr sweep\n")
    live = spikestore.Store(runs / "d.zarr")                # a writer still at work: its committed records
    live.set_step(0)
    live.append("output/fc", np.ones((2, 3), np.float32))
    live.flush()
    try:
        r = _info(str(runs))
    finally:
        live.close()
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"{runs} is not a store; it holds 4 stores:", r.stdout
    rows = {line.split()[0]: line.split()[1:] for line in lines[4:8]}
    assert lines[2].split() == ["store", "streams", "records", "status"]
    assert rows == {f"{runs}/a.zarr": ["2", "6", "closed"], f"{runs}/b.h5": ["1", "5", "closed"],
                    f"{runs}/d.zarr": ["1", "1", "open"], f"{runs}/sweep/c.zarr": ["1", "2", "closed"]}
    assert lines[-1] == f"See one with `spikestore info {runs}/a.zarr`."
    assert "damaged" not in r.output and "restore" not in r.output
    r = _info("runs", cwd=tmp_path)                          # paths as given
    assert r.exit_code == 0 and "\nruns/sweep/c.zarr " in r.stdout, r.output


def test_info_on_a_folder_without_stores_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk" / "deeper").mkdir(parents=True)
    (tmp_path / "junk" / "notes.txt").write_text("no store here\n")
    _write(tmp_path / "junk" / "deeper" / "too_deep" / "s.zarr", 1)   # three levels down: not searched
    for folder in ("empty", "junk"):
        r = _info(str(tmp_path / folder))
        assert r.exit_code == 1, r.output
        assert r.stderr == (f"spikestore: {tmp_path / folder} is not a store, and no store is in it or in its "
                            "subfolders (2 levels down): a store is a Zarr folder (run.zarr) or an HDF5 file "
                            "(run.h5) that spikestore.Store wrote\n")


def test_info_inside_a_store_names_the_store_and_the_stream(tmp_path):
    store = tmp_path / "runs" / "s.zarr"
    _write(store, 2, keys=("output/fc", "output/block.1/conv"))
    quantity = store / "output"
    escaped = next(p for p in quantity.iterdir() if p.is_dir() and p.name != "fc")  # the escaped layer name
    assert escaped.name != "block.1/conv"
    cases = {quantity / "fc": "output/fc", quantity / "fc" / "seg000000": "output/fc",
             escaped: "output/block.1/conv", escaped / "step": "output/block.1/conv"}
    for path, key in cases.items():
        r = _info(str(path))
        assert r.exit_code == 1, r.output
        assert r.stderr == (f"spikestore: {path} is not a store: it lies inside the store {store} (in stream "
                            f"{key!r}); see the store with `spikestore info {store}`, read the stream with "
                            f"spikestore.open({str(store)!r})[{key!r}]\n"), r.stderr
        assert spikestore.open(store)[key].key == key
    r = _info(str(quantity))
    assert r.exit_code == 1 and r.stderr == (f"spikestore: {quantity} is not a store: it lies inside the store "
                                             f"{store}; see the store with `spikestore info {store}`\n"), r.stderr
    r = _info("output/fc", cwd=store)                        # relative to where the command runs
    assert r.exit_code == 1 and "inside the store . (in stream 'output/fc')" in r.stderr, r.stderr


def test_info_still_calls_a_store_that_lost_its_root_document_damaged(tmp_path):
    store = tmp_path / "s.zarr"
    _write(store, 2)
    (store / "zarr.json").unlink()
    r = _info(str(store))
    assert r.exit_code == 1 and "damaged" in r.stderr and "spikestore verify" in r.stderr, r.stderr
    _write(store / "__rank1", 1)                             # a part of its own, as each rank of a run has
    (store / "zarr.json").write_text("{not json")            # and a root that cannot be read
    r = _info(str(store))
    assert r.exit_code == 1 and "damaged" in r.stderr and "holds" not in r.stdout, r.output


def test_a_folder_of_stores_is_not_called_a_damaged_store(tmp_path):
    # A folder holding stores has no root document, and its members are stores, not a lost root's groups.
    for name in ("a.zarr", "b.zarr"):
        with spikestore.Store(tmp_path / name) as store:
            store.append("output/x", np.ones(3, np.float32))
    with pytest.raises(spikestore.StoreNotFoundError) as info:
        spikestore.open(tmp_path)
    assert not isinstance(info.value, spikestore.DamagedStoreError) and "not a spikestore store" in str(info.value)
