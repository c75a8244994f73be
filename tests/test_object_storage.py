"""Stores on object storage (``s3://``), against a real S3-protocol server on loopback (moto's server mode)."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from helpers import record_as_ranks
from s3_server import S3Server, moto_s3

import spikestore
from spikestore import (
    DamagedStoreError,
    InvalidArgumentError,
    ReadOnlyError,
    StorageError,
    StoreExistsError,
    StoreNotFoundError,
    verify,
)
from spikestore.backends import StoreURL, location
from spikestore.errors import SpikestoreError


def record(step: int, call: int = 0) -> np.ndarray:
    """The record a writer of these tests appends at ``step``: checkable from the step alone."""
    rng = np.random.default_rng(1000 * step + call)
    return (rng.random((4, 3, 20)) < 0.3).astype(np.float32)


def test_a_url_stays_a_url_and_carries_its_options(s3: S3Server) -> None:
    u = location("s3://bucket/run.zarr", {"anon": True})
    assert isinstance(u, StoreURL) and not isinstance(u, Path)
    assert str(u) == "s3://bucket/run.zarr" and u.name == "run.zarr" and u.suffix == ".zarr"
    back = pickle.loads(pickle.dumps(u))
    assert back == u and back.storage_options == {"anon": True}
    assert "anon" not in repr(u)  # options (credentials) never enter the text
    with pytest.raises(InvalidArgumentError, match="storage_options apply to stores behind a URL"):
        location("run.zarr", {"anon": True})


def test_a_url_is_no_path_and_no_string() -> None:
    u = location("s3://bucket/run.zarr/", {"anon": True})
    assert not isinstance(u, str) and not hasattr(u, "is_dir")  # no folder to ask about
    assert str(u) == f"{u}" == "s3://bucket/run.zarr"
    part = u / "__rank1"
    assert isinstance(part, StoreURL) and str(part) == "s3://bucket/run.zarr/__rank1"
    assert part.storage_options == {"anon": True} and part.name == "__rank1"
    assert location(u) is u and location(u, {"anon": False}).storage_options == {"anon": False}
    assert u == StoreURL("s3://bucket/run.zarr", {"anon": True}) != StoreURL("s3://bucket/run.zarr")
    assert len({u, StoreURL("s3://bucket/run.zarr", {"anon": True})}) == 1
    assert location("file:///tmp/run.zarr") == Path("/tmp/run.zarr")


def test_a_spikingjelly_run_recorded_to_s3_reads_back_as_the_local_one(s3: S3Server, url: StoreURL,
                                                                         tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from spikingjelly.activation_based import functional, layer, neuron

    from spikestore import monitor as ss

    views: dict[str, list[np.ndarray]] = {}

    def record_run(where: object, **kw: object) -> None:
        torch.manual_seed(0)
        net = torch.nn.Sequential(layer.Linear(12, 8), neuron.LIFNode(), layer.Linear(8, 4), neuron.LIFNode())
        functional.set_step_mode(net, "m")
        with spikestore.Store(where, mode="w", chunk_bytes=256, **kw) as store:
            mon = ss.OutputMonitor(net, neuron.LIFNode, store=store)
            v = ss.AttributeMonitor("v_seq", False, net, neuron.LIFNode, store=store)
            for node in net.modules():
                if isinstance(node, neuron.LIFNode):
                    node.store_v_seq = True
            for step in range(6):
                store.set_step(step)
                with torch.no_grad():
                    net(torch.rand(5, 3 if step < 5 else 2, 12) * 2)  # a smaller last batch
                functional.reset_net(net)
            # the monitor's lazy view reads back through the store's path (a StoreURL
            # carrying its storage_options, for s3://)
            views[str(where)] = [np.asarray(r) for r in mon.records]
            mon.remove_hooks()
            v.remove_hooks()

    record_run(tmp_path / "local.zarr")
    record_run(str(url), storage_options=url.storage_options, lock=False)

    mine, theirs = views[str(tmp_path / "local.zarr")], views[str(url)]
    assert len(mine) == len(theirs) == 12
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
    local = spikestore.open(tmp_path / "local.zarr")
    remote = spikestore.open(str(url), storage_options=url.storage_options)
    assert isinstance(remote.path, StoreURL) and str(remote.path) == str(url)
    assert remote.streams == local.streams and len(remote.streams) == 4
    assert remote.writer["status"] == "closed"
    for key in local.streams:
        a, b = local[key], remote[key]
        assert len(a) == len(b) == 6
        np.testing.assert_array_equal(a.steps, b.steps)
        for i in range(len(a)):
            np.testing.assert_array_equal(a[i], b[i])
    # lazily: nothing but the root document is read until a record is asked for, and a
    # pickled run (dask's process schedulers) reopens the same URL with its options
    again = pickle.loads(pickle.dumps(remote))
    np.testing.assert_array_equal(again[local.streams[0]][5], local[local.streams[0]][5])
    keys = s3.keys(str(url).split("/")[2])
    assert any(k.endswith("/zarr.json") for k in keys)
    assert not [k for k in keys if ".partial" in k or k.endswith(".lock")]  # no temporaries, no lock object


def test_append_overwrite_and_existing_store(url: StoreURL) -> None:
    opts = url.storage_options
    with spikestore.Store(str(url), mode="w", storage_options=opts, lock=False, durable=True) as store:
        for step in range(3):
            store.set_step(step)
            store.append("output/a", record(step))
    with pytest.raises(StoreExistsError, match="overwrite=True"):
        spikestore.Store(str(url), mode="w", storage_options=opts, lock=False)
    with spikestore.Store(str(url), mode="a", storage_options=opts, lock=False) as store:
        store.append("output/a", record(store.step), step=store.step)
    run = spikestore.open(str(url), storage_options=opts)
    assert list(run["output/a"].steps) == [0, 1, 2, 3]
    np.testing.assert_array_equal(run["output/a"][3], record(3))
    with spikestore.Store(str(url), mode="w", storage_options=opts, lock=False, overwrite=True) as store:
        store.append("output/b", record(0))
    run = spikestore.open(str(url), storage_options=opts)
    assert run.streams == ["output/b"]


def test_a_url_is_locked_by_default_and_a_local_path_refuses_lock_false(url: StoreURL, tmp_path: Path) -> None:
    with spikestore.Store(str(url), mode="w", storage_options=url.storage_options) as store:  # leased lock
        store.append("output/a", record(0))
    with pytest.raises(InvalidArgumentError, match="lock=False applies to stores behind a URL"):
        spikestore.Store(tmp_path / "r.zarr", mode="w", lock=False)
    assert not (tmp_path / "r.zarr").exists()


def test_hdf5_behind_a_url_is_refused_naming_zarr(s3: S3Server, url: StoreURL) -> None:
    with pytest.raises(InvalidArgumentError, match="Zarr"):
        spikestore.Store("s3://bucket/run.h5", mode="w", storage_options=s3.storage_options, lock=False)
    with pytest.raises(InvalidArgumentError, match="Zarr"):
        spikestore.open("s3://bucket/run.h5", storage_options=s3.storage_options)
    with spikestore.Store(url, mode="w", lock=False) as store:
        store.append("output/a", record(0))
    with pytest.raises(InvalidArgumentError, match="Zarr"):  # refused before overwrite deletes anything
        spikestore.Store(url, mode="w", backend="hdf5", overwrite=True, lock=False)
    assert len(spikestore.open(url)["output/a"]) == 1


def test_what_the_object_store_refuses_becomes_a_spikestore_error(s3: S3Server) -> None:
    opts = s3.storage_options
    with pytest.raises(StoreNotFoundError, match="create the bucket first"):
        spikestore.Store("s3://no-such-bucket-here/run.zarr", mode="w", storage_options=opts, lock=False)
    with pytest.raises(StoreNotFoundError, match="check the bucket"):
        spikestore.open("s3://no-such-bucket-here/run.zarr", storage_options=opts)
    # nothing listens on port 9 of loopback: a network that is down
    down = dict(opts, endpoint_url="http://127.0.0.1:9", config_kwargs={"retries": {"max_attempts": 1}})
    with pytest.raises(SpikestoreError, match="cannot be reached"):
        spikestore.Store("s3://bucket-down/run.zarr", mode="w", storage_options=down, lock=False)


def test_no_credentials_and_a_store_out_of_reach_say_what_to_do(s3: S3Server, url: StoreURL,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bare = {"endpoint_url": s3.endpoint}
    for attempt in (lambda: spikestore.Store(str(url), mode="w", storage_options=bare, lock=False),
                    lambda: spikestore.open(str(url), storage_options=bare)):
        with pytest.raises(ReadOnlyError, match="no credentials for the object store"):
            attempt()
    down = dict(url.storage_options, endpoint_url="http://127.0.0.1:9",
                config_kwargs={"retries": {"max_attempts": 1}})
    with pytest.raises(StorageError, match="cannot be reached") as info:  # not "no store there"
        spikestore.open(str(url), storage_options=down)
    assert not isinstance(info.value, (StoreNotFoundError, DamagedStoreError))


def test_a_reader_sees_only_committed_records_while_the_writer_runs(url: StoreURL) -> None:
    opts = url.storage_options
    store = spikestore.Store(str(url), mode="w", storage_options=opts, lock=False, chunk_bytes=512,
                             flush_interval=0.05)
    done = threading.Event()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            for step in range(40):
                store.set_step(step)
                store.append("output/a", record(step))
                if step % 5 == 4:
                    store.flush()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which raises it
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        run = None
        while run is None and not done.is_set():
            try:
                run = spikestore.open(str(url), storage_options=opts)
            except StoreNotFoundError:
                time.sleep(0.01)
        assert run is not None
        seen, checked = [], 0
        while True:
            finished = done.is_set()
            run.refresh()
            n = len(run["output/a"]) if "output/a" in run else 0
            assert not seen or n >= seen[-1], "a committed count never shrinks"
            seen.append(n)
            if n:
                steps = run["output/a"].steps
                assert list(steps) == list(range(n))
                for i in {n - 1, checked % n}:  # the newest record, and one more each round
                    np.testing.assert_array_equal(run["output/a"][i], record(i))
                checked += 1
            if finished:
                break
    finally:
        thread.join()
        store.close()
    assert not failure, failure
    assert len(set(seen)) > 2, f"the reader should have seen the store grow: {seen}"
    run.refresh()
    assert len(run["output/a"]) == 40


_KILLED_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    import spikestore
    from spikestore.backends import StoreURL
    sys.path.insert(0, sys.argv[3])
    from test_object_storage import record

    url = StoreURL(sys.argv[1], {"endpoint_url": sys.argv[2], "key": "testing", "secret": "testing",
                                 "client_kwargs": {"region_name": "us-east-1"}})
    store = spikestore.Store(url, mode="w", lock=False, chunk_bytes=512, flush_interval=0.05)
    step = 0
    while True:
        store.set_step(step)
        store.append("output/a", record(step))
        store.append("v/a", record(step, 1) * 0.5 - 0.1)
        if step % 3 == 2:
            store.flush()
            print(step + 1, flush=True)
        step += 1
""")


def test_a_writer_killed_mid_run_leaves_a_readable_committed_prefix(s3: S3Server, url: StoreURL,
                                                                   tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(url), s3.endpoint, str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        flushed = 0
        deadline = time.monotonic() + 120
        while flushed < 12 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            flushed = int(line)
        assert flushed >= 12, "the writer should have flushed a few times"
        proc.send_signal(signal.SIGKILL)  # mid-run: the writer thread is encoding and putting more
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run = spikestore.open(str(url), storage_options=url.storage_options)
    assert run.writer["status"] == "open"  # it never closed
    for key, call in (("output/a", 0), ("v/a", 1)):
        s = run[key]
        assert len(s) >= flushed, "every record flushed before the kill is committed"
        assert list(s.steps) == list(range(len(s)))
        for i in range(len(s)):
            want = record(i, call) if call == 0 else record(i, 1) * 0.5 - 0.1
            np.testing.assert_array_equal(s[i], want)
    # appending after the crash continues after the last committed step
    with spikestore.Store(str(url), mode="a", storage_options=url.storage_options, lock=False) as store:
        assert store.step == max(len(run["output/a"]), len(run["v/a"]))


# -- storage that fails is not damage -----------------------------------------------------------------

def _failing_fast(options: dict) -> dict:
    """``options`` with one attempt per request and short timeouts: a server that is gone fails in ~1 s."""
    return dict(options, config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 5})


def test_a_reader_that_loses_the_object_store_gets_a_storage_error_not_damage() -> None:
    with moto_s3() as server:  # a server of its own, to stop mid-read
        url = StoreURL(f"s3://{server.new_bucket()}/run.zarr", _failing_fast(server.storage_options))
        with spikestore.Store(url, mode="w", lock=False, chunk_bytes=256) as store:
            for step in range(8):
                store.set_step(step)
                store.append("output/a", record(step))
        run = spikestore.open(url)
        s = run["output/a"]
        np.testing.assert_array_equal(s[0], record(0))
    # the server is stopped: nothing listens at its endpoint any more
    for read in (lambda: s[7], run.refresh, lambda: run["output/a"][3], lambda: verify(url)):
        with pytest.raises(StorageError, match="cannot be reached") as info:
            read()
        assert not isinstance(info.value, (DamagedStoreError, StoreNotFoundError))
        assert isinstance(info.value, OSError) and info.value.__cause__ is not None
    assert "verify stopped, the storage failed" in str(info.value)


def test_a_bucket_removed_under_an_open_run_is_not_found_not_damage(s3: S3Server, url: StoreURL) -> None:
    import boto3

    with spikestore.Store(url, mode="w", lock=False, chunk_bytes=256) as store:
        for step in range(4):
            store.set_step(step)
            store.append("output/a", record(step))
    s = spikestore.open(url)["output/a"]
    bucket = str(url).split("/")[2]
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for key in s3.keys(bucket):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)
    with pytest.raises(StoreNotFoundError, match="deleted \\(or its bucket removed\\)") as info:
        s[3]
    assert not isinstance(info.value, DamagedStoreError)


def test_verify_of_a_store_out_of_reach_says_so_and_lists_no_damage(url: StoreURL) -> None:
    import json

    from click.testing import CliRunner

    from spikestore.cli import main

    with spikestore.Store(url, mode="w", lock=False) as store:
        store.append("output/a", record(0))
    down = _failing_fast(dict(url.storage_options, endpoint_url="http://127.0.0.1:9"))
    r = CliRunner().invoke(main, ["verify", str(url), "--storage-options", json.dumps(down)])
    assert r.exit_code == 1 and "cannot be reached" in r.output and "problem(s) found" not in r.output
    assert ": intact" not in r.output and "is damaged" not in r.output and "missing" not in r.output


# -- runs of several ranks --------------------------------------------------------------------------

def _rank_record(step: int, rank: int) -> np.ndarray:
    return record(step, rank) * (rank + 1)


def test_a_run_of_two_ranks_records_to_s3_and_reads_back_as_one(s3: S3Server, url: StoreURL,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    import xarray as xr

    def write(steps: range):
        def one_rank(store: spikestore.Store, r: int) -> None:
            assert isinstance(store.path, StoreURL) and store.path.storage_options == url.storage_options
            for step in steps:
                store.set_step(step)
                store.append("output/a", _rank_record(step, r))
                if r == 1:
                    store.append("only/1", np.int64(step))
        return one_rank

    opts = url.storage_options
    record_as_ranks(url, monkeypatch, write(range(3)), storage_options=opts, lock=False, chunk_bytes=512)
    record_as_ranks(url, monkeypatch, write(range(3, 5)), mode="a", storage_options=opts, lock=False,
                    chunk_bytes=512)
    keys = s3.keys(str(url).split("/")[2])
    assert "run.zarr/__rank1/zarr.json" in keys and not [k for k in keys if k.endswith(".lock")]

    run = spikestore.open(str(url), storage_options=opts)
    assert run.ranks == [0, 1] and run.doc["format_version"] == 3
    assert run.streams == ["output/a", "only/1"]
    s = run["output/a"]
    assert s.steps.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and s.ranks.tolist() == [0, 1] * 5
    for i, (step, r) in enumerate(zip(s.steps, s.ranks, strict=True)):
        np.testing.assert_array_equal(s[i], _rank_record(int(step), int(r)))
    for r in (0, 1):
        part = run.rank(r)
        assert isinstance(part.path, StoreURL) and part.ranks == [r]
        assert part["output/a"].steps.tolist() == list(range(5))
        for step in range(5):
            np.testing.assert_array_equal(part["output/a"][step], _rank_record(step, r))
    assert run["only/1"].ranks.tolist() == [1] * 5 and run["only/1"][:].tolist() == list(range(5))
    assert spikestore.open(url / "__rank1").doc["rank"] == 1

    assert verify(str(url), storage_options=opts) == []
    ds = xr.open_dataset(str(url), engine="spikestore", storage_options=opts)
    assert ds["output/a:rank"].values.tolist() == [0, 1] * 5
    np.testing.assert_array_equal(ds["output/a"].values, s[:])
    ds.close()

    # damage in rank 1's part is found there, and only there
    import boto3

    bucket, prefix = str(url).split("/", 3)[2:]
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    chunk = next(k for k in keys if k.startswith(f"{prefix}/__rank1/output/a/seg") and "/c." in k)
    client.put_object(Bucket=bucket, Key=chunk, Body=b"garbage")
    problems = verify(url)
    assert problems and all(line.startswith("rank 1: ") for line in problems)
    assert any("corrupt" in line or "cannot be read" in line for line in problems)


def test_each_rank_part_on_s3_has_its_own_leased_lock(s3: S3Server, url: StoreURL,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = url.url.split("/")[2]
    seen: list[list[str]] = []

    def write(store, rank):
        store.append("output/a", record(rank))
        store.flush()
        seen.append([k for k in s3.keys(bucket) if k.endswith(".lock")])

    record_as_ranks(url, monkeypatch, write, storage_options=url.storage_options)
    assert seen == [["run.zarr.lock"], ["run.zarr/__rank1.lock"]]  # (rank by rank here)
    assert not [k for k in s3.keys(bucket) if k.endswith(".lock")]  # each released at close


# -- the command line and xarray, by URL --------------------------------------------------------------

def test_the_command_line_reads_a_store_by_url(s3: S3Server, url: StoreURL, tmp_path: Path) -> None:
    import json

    with spikestore.Store(url, mode="w", lock=False, metadata={"lr": 0.1}) as store:
        for step in range(3):
            store.set_step(step)
            store.append("output/a", record(step))
    exe = Path(sys.executable).parent / "spikestore"
    flags = [f"--storage-option=endpoint_url={s3.endpoint}", "--storage-option=key=testing",
             "--storage-option=secret=testing", '--storage-option=client_kwargs={"region_name": "us-east-1"}']

    def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, check=False,
                              env=None if env is None else {**os.environ, **env})

    r = cli("info", str(url), *flags)
    assert r.returncode == 0, r.stderr
    assert "writer     closed" in r.stdout and "output/a" in r.stdout and "lr=0.1" in r.stdout
    r = cli("verify", str(url), "--storage-options", json.dumps(url.storage_options))
    assert r.returncode == 0 and f"{url}: intact" in r.stdout, r.stderr
    r = cli("export", str(url), str(tmp_path / "a.npz"), env={"SPIKESTORE_STORAGE_OPTIONS": json.dumps(
        url.storage_options)})
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["output/a"][2], record(2))
    r = cli("plot", str(url), "--kind", "raster", "--stream", "output/a", "--out", str(tmp_path / "r.png"), *flags)
    assert r.returncode == 0 and (tmp_path / "r.png").stat().st_size > 0, r.stderr
    # options for a local path, and options that are not KEY=VALUE or not JSON, are usage errors
    r = cli("info", str(tmp_path), "--storage-option", "anon=true")
    assert r.returncode == 2 and "storage_options apply to stores behind a URL" in r.stderr
    r = cli("info", str(url), "--storage-option", "anon")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
    r = cli("info", str(url), "--storage-options", "{nope")
    assert r.returncode == 2 and "not JSON" in r.stderr
    assert "Traceback" not in r.stderr


def test_storage_option_values_are_json_when_they_parse_as_json() -> None:
    from spikestore._cli_args import parse_storage_options

    got = parse_storage_options(("anon=true", "endpoint_url=http://h:9000", 'client_kwargs={"region_name": "x"}',
                            "key=\"123\"", "retries=3", "secret=a=b"), '{"anon": false, "token": "t"}')
    assert got == {"anon": True, "endpoint_url": "http://h:9000", "client_kwargs": {"region_name": "x"},
                   "key": "123", "retries": 3, "secret": "a=b", "token": "t"}
    assert parse_storage_options((), None) is None


def test_xarray_and_the_exporters_open_a_url_with_its_options(url: StoreURL, tmp_path: Path) -> None:
    import xarray as xr

    from spikestore.export import to_npz
    from spikestore.export._common import as_run

    with spikestore.Store(url, mode="w", lock=False) as store:
        for step in range(3):
            store.set_step(step)
            store.append("output/a", record(step))
    tree = xr.open_datatree(str(url), engine="spikestore", storage_options=url.storage_options)
    np.testing.assert_array_equal(tree["output/a"]["output"].values[1], record(1))
    tree.close()
    run, owned = as_run(str(url), storage_options=url.storage_options)
    assert owned and isinstance(run.path, StoreURL) and len(run["output/a"]) == 3
    run.close()
    out = to_npz(url, tmp_path / "a.npz")  # a StoreURL carries its options
    with np.load(out, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["output/a"][0], record(0))
