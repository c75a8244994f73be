"""A real S3-protocol server on loopback for the tests: moto's server mode, as zarr's own tests start it.

Not a mock object: every request goes over HTTP to ``ThreadedMotoServer``
on ``127.0.0.1`` and through s3fs, aiobotocore and zarr's ``FsspecStore``,
as it would to AWS.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["S3Server", "moto_s3"]


@dataclass(frozen=True)
class S3Server:
    """Where the server listens, and how to reach it."""

    endpoint: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """``storage_options`` for ``Store``/``spikestore.open`` (fsspec's s3fs spelling)."""
        return {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing",
                "client_kwargs": {"region_name": "us-east-1"}}

    def new_bucket(self) -> str:
        """Create a bucket with a fresh name; return the name."""
        import boto3

        name = f"spikes-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` in ``bucket``."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        out: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


@contextmanager
def moto_s3() -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port; stop it afterwards."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
