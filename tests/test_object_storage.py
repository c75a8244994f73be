"""Stores on object storage (``s3://``), against a real S3-protocol server on loopback (moto's server mode)."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import spikestore  # noqa: E402
from spikestore import InvalidArgumentError, ReadOnlyError, StoreExistsError, StoreNotFoundError  # noqa: E402
from spikestore.backends import StoreURL, location  # noqa: E402
from spikestore.errors import SpikestoreError  # noqa: E402

from s3_server import S3Server, moto_s3  # noqa: E402


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_s3() as server:
        yield server


@pytest.fixture()
def url(s3: S3Server) -> StoreURL:
    """A fresh store URL in a fresh bucket, carrying the server's storage_options."""
    return StoreURL(f"s3://{s3.new_bucket()}/run.zarr", s3.storage_options)


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
    for a, b in zip(mine, theirs):
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
    keys = s3.keys(url.split("/")[2])
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


def test_a_url_needs_the_single_writer_promise_and_a_local_path_refuses_it(url: StoreURL, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="pass lock=False"):
        spikestore.Store(str(url), mode="w", storage_options=url.storage_options)
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
    with pytest.raises(StoreNotFoundError, match="cannot be reached"):
        spikestore.open(str(url), storage_options=down)


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
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
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
