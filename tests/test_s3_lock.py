"""The writer lock of a store on S3: a leased lock object written with conditional PUTs (docs/object-storage.md §3).

Against a real S3-protocol server on loopback (moto's server mode, which implements ``If-None-Match`` and
``If-Match`` on PUT), and, for an object store that does not honour them, the same server behind a proxy
that drops or refuses those headers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from s3_server import S3Server, conditions_dropped

import spikestore
from spikestore import InvalidArgumentError, StoreInUseError, WriterError
from spikestore.backends import StoreURL

HOLDER = f"process {os.getpid()} on {socket.gethostname()}"


@pytest.fixture()
def short_lease(monkeypatch: pytest.MonkeyPatch) -> float:
    """Leases of 2 s for the writers this test opens (renewed every 1/3 s)."""
    import spikestore._write.lease as lock  # no public knob: the lease is documented, not configurable

    monkeypatch.setattr(lock, "LEASE_S", 2.0)
    return 2.0


def _bucket(url: StoreURL) -> str:
    return url.url.split("://", 1)[1].split("/", 1)[0]


def _client(s3: S3Server) -> Any:
    """A plain boto3 client of the test server: what another program sees of the bucket."""
    import boto3

    return boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _write_until_the_lease_is_found_lost(store: spikestore.Store) -> None:
    """Keep recording until the writer reports the lease it lost (at its next renewal), or fail."""
    deadline = time.monotonic() + 60
    with pytest.raises(WriterError, match=r"took the writer lock .* over"):
        while time.monotonic() < deadline:
            store.set_step(store.step + 1)
            store.append("output/a", np.zeros(3))
            store.flush()
            time.sleep(0.05)  # (pacing a polling loop with a deadline)
    with pytest.raises(WriterError):
        store.close()


def _lock_object(s3: S3Server, url: StoreURL) -> dict | None:
    client = _client(s3)
    try:
        got = client.get_object(Bucket=_bucket(url), Key="run.zarr.lock")
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(got["Body"].read())


def _records(url: StoreURL) -> list[list[float]]:
    return [r.tolist() for r in spikestore.open(url)["output/a"]]


def test_a_second_writer_in_this_process_is_refused_and_the_lock_object_goes_at_close(s3: S3Server,
                                                                                     url: StoreURL) -> None:
    with spikestore.Store(url) as first:  # no lock=False: the store is locked
        first.append("output/a", np.ones(3))
        first.flush()
        held = _lock_object(s3, url)
        assert held is not None and held["pid"] == os.getpid()
        for mode, overwrite in (("a", False), ("w", True)):
            with pytest.raises(StoreInUseError, match=HOLDER) as info:
                spikestore.Store(url, mode=mode, overwrite=overwrite)
            assert "spikestore.open" in str(info.value)
        assert _records(url) == [[1.0, 1.0, 1.0]]  # the refused overwrite deleted nothing
        first.set_step(1)
        first.append("output/a", np.zeros(3))
    assert _lock_object(s3, url) is None  # released at close
    assert _records(url) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    with spikestore.Store(url, mode="a") as again:  # free at once
        again.append("output/a", np.full(3, 2.0))
    assert len(_records(url)) == 3


_OTHER = textwrap.dedent("""
    import sys, numpy as np, spikestore
    from spikestore.backends import StoreURL
    url = StoreURL(sys.argv[1], {"endpoint_url": sys.argv[2], "key": "testing", "secret": "testing",
                                 "client_kwargs": {"region_name": "us-east-1"}})
    try:
        with spikestore.Store(url, mode="w", overwrite=True) as store:
            store.append("output/a", np.full(3, 7.0))
        print("wrote")
    except spikestore.StoreInUseError as exc:
        print("in use:", exc)
""")


@pytest.mark.slow
def test_a_second_writer_from_another_process_is_refused(s3: S3Server, url: StoreURL) -> None:
    with spikestore.Store(url) as first:
        first.append("output/a", np.ones(3))
        first.flush()
        out = subprocess.run([sys.executable, "-c", _OTHER, url.url, s3.endpoint], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("in use:") and HOLDER in out.stdout, out.stdout
        first.set_step(1)
        first.append("output/a", np.zeros(3))
    assert _records(url) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_renewal_keeps_the_lease_past_its_interval(s3: S3Server, url: StoreURL, short_lease: float) -> None:
    with spikestore.Store(url) as first:
        first.append("output/a", np.ones(3))
        first.flush()
        deadline = time.monotonic() + 60
        while (_lock_object(s3, url) or {}).get("renewal", 0) < 18:  # three lease intervals
            assert time.monotonic() < deadline, "the lease should be renewed every lease_s / 6"
            time.sleep(0.05)
        with pytest.raises(StoreInUseError, match=HOLDER):
            spikestore.Store(url, mode="a")
        first.set_step(1)
        first.append("output/a", np.zeros(3))  # still the writer: its lease never lapsed
    assert _records(url) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


_KILLED = textwrap.dedent("""
    import sys, numpy as np, spikestore
    import spikestore._write.lease as lock
    from spikestore.backends import StoreURL
    lock.LEASE_S = 2.0
    url = StoreURL(sys.argv[1], {"endpoint_url": sys.argv[2], "key": "testing", "secret": "testing",
                                 "client_kwargs": {"region_name": "us-east-1"}})
    store = spikestore.Store(url, mode="w")
    store.append("output/a", np.ones(3)); store.flush()
    print("flushed", flush=True)
    sys.stdin.read()  # wait to be killed
""")


@pytest.mark.slow
def test_the_expired_lease_of_a_killed_writer_is_taken_over(s3: S3Server, url: StoreURL,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spikestore")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, url.url, s3.endpoint], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "flushed"
        with pytest.raises(StoreInUseError, match=f"process {proc.pid} on .*expire 2 s after"):
            spikestore.Store(url, mode="a")  # alive and renewing: refused
        proc.send_signal(signal.SIGKILL)  # the lock object stays, renewed no more
    finally:
        proc.kill()
        proc.wait()
    assert _lock_object(s3, url)["pid"] == proc.pid
    deadline = time.monotonic() + 60
    while True:  # refused until the lease expires, then taken over
        try:
            store = spikestore.Store(url, mode="a")
            break
        except StoreInUseError as exc:
            assert f"process {proc.pid}" in str(exc)
            assert time.monotonic() < deadline, "a lease of 2 s should expire"
            time.sleep(0.2)
    with store:
        assert _lock_object(s3, url)["pid"] == os.getpid()
        store.append("output/a", np.zeros(3))
    assert "took over the writer lock" in caplog.text
    assert _lock_object(s3, url) is None
    assert _records(url) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_a_writer_whose_lease_was_taken_over_writes_nothing_more(s3: S3Server, url: StoreURL,
                                                                short_lease: float) -> None:
    store = spikestore.Store(url)
    store.append("output/a", np.ones(3))
    store.flush()
    client = _client(s3)
    other = json.dumps({"pid": 1, "host": "elsewhere", "token": "x", "renewal": 0, "lease_s": 2.0}).encode()
    client.put_object(Bucket=_bucket(url), Key="run.zarr.lock", Body=other)  # another writer's lease
    _write_until_the_lease_is_found_lost(store)
    assert _lock_object(s3, url)["host"] == "elsewhere"  # the other writer's lock stays
    assert _records(url)[0] == [1.0, 1.0, 1.0]


def test_a_writer_whose_lock_object_was_deleted_stops_at_its_next_renewal(s3: S3Server, url: StoreURL,
                                                                         short_lease: float) -> None:
    store = spikestore.Store(url)
    store.append("output/a", np.ones(3))
    store.flush()
    client = _client(s3)
    client.delete_object(Bucket=_bucket(url), Key="run.zarr.lock")  # what nobody may do beside a live store
    _write_until_the_lease_is_found_lost(store)
    assert _lock_object(s3, url) is None


def test_lock_false_still_writes_without_a_lock_object(s3: S3Server, url: StoreURL) -> None:
    with spikestore.Store(url, lock=False) as store:
        store.append("output/a", np.ones(3))
        store.flush()
        assert _lock_object(s3, url) is None
    assert _records(url) == [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("reject", [False, True], ids=["ignores", "refuses"])
def test_an_object_store_without_conditional_writes_says_to_pass_lock_false(s3: S3Server, reject: bool) -> None:
    bucket = s3.new_bucket()
    with conditions_dropped(s3, reject=reject) as proxy:
        url = StoreURL(f"s3://{bucket}/run.zarr", proxy.storage_options)
        said = "refused a conditional write" if reject else "ignores conditional writes"
        with pytest.raises(InvalidArgumentError, match=f"{said}.*pass lock=False"):
            spikestore.Store(url)
        assert s3.keys(bucket) == []  # no lock object left, nothing written
        with spikestore.Store(url, lock=False) as store:  # the caller's promise instead
            store.append("output/a", np.ones(3))
        assert _records(url) == [[1.0, 1.0, 1.0]]


def test_a_url_not_on_s3_says_to_pass_lock_false(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"conditional writes.*lock=False"):
        spikestore.Store(StoreURL(f"memory://{tmp_path.name}/run.zarr"))
