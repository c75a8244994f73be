"""``spikestore serve``: a web page that follows a store while it is written.

A Tornado server (``pip install 'spikestore[live]'``) on 127.0.0.1: one thread
follows the store with :class:`~spikestore.live.Follower` every ``interval``
seconds and publishes what the page shows; each browser tab polls a JSON view
of the latest publication and draws it with uPlot, which ships inside this
package, so the page needs no network. Why this design, what the page shows
and what it costs: docs/live.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from spikestore._cli_args import StorePath, fail, location, storage_flags
from spikestore.backends import StoreURL
from spikestore.errors import MissingDependencyError, SpikestoreError

__all__ = ["LOOPBACK", "run_server", "serve"]

#: Hosts that only this machine can reach; any other ``--host`` prints a warning.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def run_server(path: str | os.PathLike[str] | StoreURL, *, port: int = 8765, host: str = "127.0.0.1",
               interval: float = 1.0, threshold: float = 1.0, storage_options: dict[str, Any] | None = None,
               on_start: Callable[[str], None] | None = None) -> None:
    """Serve the page of the store at ``path`` until SIGINT (Ctrl-C) or SIGTERM; then return.

    Parameters
    ----------
    path
        The store's local path or URL.
    port
        TCP port; 0 picks a free one (the URL passed to ``on_start`` names it).
    host
        Address to listen on. Anyone who can reach it can read the store.
    interval
        Seconds between two refreshes of the store (the page follows within
        about 1.5 intervals of a flush).
    threshold
        Firing threshold drawn on voltage traces (SpikingJelly's LIF default ``v_threshold`` is 1.0).
    storage_options
        For a URL: what reaches it, as for :func:`spikestore.open`.
    on_start
        Called with the page's URL once the server listens.

    Raises
    ------
    MissingDependencyError
        Without tornado.
    SpikestoreError
        If the store cannot be opened.
    """
    try:
        import asyncio
        import signal
        from concurrent.futures import ThreadPoolExecutor

        from tornado.httpserver import HTTPServer
        from tornado.ioloop import IOLoop, PeriodicCallback
        from tornado.netutil import bind_sockets

        from spikestore.live._serve_app import PageOptions, make_app
        from spikestore.live._serve_data import PageState
    except ImportError as exc:
        raise MissingDependencyError(f"spikestore serve needs tornado ({exc}): pip install 'spikestore[live]'") \
            from None

    state = PageState(path, storage_options)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spikestore-serve-refresh")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    http: HTTPServer | None = None
    try:
        state.refresh()
        io_loop = IOLoop.current()
        sockets = bind_sockets(port, address=host)
        bound = int(sockets[0].getsockname()[1])
        http = HTTPServer(make_app(lambda: state.data, PageOptions(interval, threshold)))
        http.add_sockets(sockets)

        busy = False
        reported: set[str] = set()

        async def follow() -> None:
            nonlocal busy
            if busy:  # a slow store: never queue refreshes behind each other
                return
            busy = True
            try:
                await io_loop.run_in_executor(executor, state.refresh)
            except (SpikestoreError, OSError) as exc:  # the page keeps the last refresh; say why once
                if str(exc) not in reported:
                    reported.add(str(exc))
                    print(f"spikestore serve: refresh failed, showing the last one: {exc}", file=sys.stderr)
            finally:
                busy = False

        PeriodicCallback(follow, interval * 1000).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, io_loop.stop)
        shown = f"[{host}]" if ":" in host else host
        if on_start is not None:
            on_start(f"http://{shown}:{bound}/")
        io_loop.start()
    finally:
        if http is not None:
            http.stop()
            loop.run_until_complete(http.close_all_connections())
        executor.shutdown(wait=True)
        state.close()
        loop.close()
        asyncio.set_event_loop(None)


@click.command("serve")
@click.argument("path", type=StorePath(exists=True))
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port (0 picks a free one; the printed URL names it).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but this machine's loopback lets others read the store.")
@click.option("--interval", type=click.FloatRange(0.1, 60.0), default=1.0, show_default=True,
              help="Seconds between two refreshes of the store.")
@click.option("--threshold", type=float, default=1.0, show_default=True,
              help="Firing threshold drawn on voltage traces (SpikingJelly's LIF default v_threshold).")
@storage_flags
def serve(path: Path | str, port: int, host: str, interval: float, threshold: float,
          storage_option: tuple[str, ...], storage_options_json: str | None) -> None:
    """Serve a web page that follows the store at PATH while it is written.

    The page lists every stream with its latest committed step and draws firing
    rates per layer, a raster and voltage traces of the latest step, a
    per-neuron rate heat map over steps and gradient norms; it follows the
    store without a reload. Ctrl-C or SIGTERM stops the server (docs/live.md).
    """
    where = location(path, storage_option, storage_options_json)
    if host not in LOOPBACK:
        click.echo(f"spikestore serve: warning: listening on {host}: anyone who can reach this host on the port "
                   "can read the store", err=True)

    def started(url: str) -> None:
        click.echo(f"spikestore serve: {url} (Ctrl-C stops)")
        sys.stdout.flush()

    try:
        run_server(where, port=port, host=host, interval=interval, threshold=threshold, on_start=started)
    except (SpikestoreError, OSError) as exc:
        fail(exc, where)
    click.echo("spikestore serve: stopped")
