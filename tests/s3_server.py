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

__all__ = ["S3Server", "conditions_dropped", "moto_s3"]


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


#: The request headers of S3's conditional writes.
CONDITIONS = ("if-none-match", "if-match")


@contextmanager
def conditions_dropped(server: S3Server, *, reject: bool = False) -> Iterator[S3Server]:
    """An S3 endpoint in front of ``server`` that does not honour conditional writes.

    An HTTP proxy on loopback: every request goes on to ``server`` unchanged,
    except that a request carrying ``If-None-Match`` or ``If-Match`` has those
    headers removed (an object store that ignores them), or, with ``reject``,
    is answered ``501 NotImplemented`` as S3 answers a header it does not
    implement (an object store that refuses them).
    """
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    target = urlsplit(server.endpoint)

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conditional = any(h in (k.lower() for k in self.headers) for h in CONDITIONS)
            if reject and conditional:
                self.reply(501, [("Content-Type", "application/xml")],
                           b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code><Message>A "
                           b"header you provided implies functionality that is not implemented</Message></Error>")
                return
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in (*CONDITIONS, "host", "connection")}
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                kept = [(k, v) for k, v in resp.getheaders()
                        if k.lower() not in ("transfer-encoding", "connection", "content-length")]
                self.reply(resp.status, kept, data)
            finally:
                conn.close()

        def reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = proxy.server_address[:2]
        yield S3Server(f"http://{host}:{port}")
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
