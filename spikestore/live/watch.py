"""``spikestore watch PATH``: follow a store in a terminal while its writer appends to it.

On a terminal it opens a textual view (:mod:`spikestore.live._watch_app`) that
refreshes every ``--interval`` seconds; with ``--once``, or when stdout is not a
terminal (a pipe, a log file, ``TERM=dumb``), it prints one plain-text snapshot
(:func:`spikestore.live._watch_text.render_snapshot`) and exits 0. Both read the
store through :class:`spikestore.live.Follower`: committed data only, and only
what is new at each refresh (docs/live.md).
It takes a store as every ``spikestore`` command does (:mod:`spikestore._cli_args`),
and says of a path that is not a store what ``spikestore info`` says.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from spikestore._cli_args import StorePath, fail, location, storage_flags
from spikestore.errors import SpikestoreError
from spikestore.live._watch_text import render_snapshot

__all__ = ["render_snapshot", "run_watch", "watch"]

#: The longest refresh interval: the view must follow a run within 2 s.
MAX_INTERVAL = 2.0


def _can_draw_blocks() -> bool:
    """Whether stdout can print the sparklines' Unicode blocks (an ASCII-only locale cannot)."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "▁█±".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _is_terminal() -> bool:
    """Whether stdout is a terminal that can draw the view (a pipe, a file or ``TERM=dumb`` cannot)."""
    return sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb"


def run_watch(where: Any, *, interval: float, once: bool) -> None:
    """Open the store at ``where`` (a path or a ``StoreURL``) and show it: one snapshot, or the live view."""
    from spikestore.live import Follower

    try:
        with Follower(where) as follower:
            if once or not _is_terminal():
                click.echo(render_snapshot(follower.refresh(), ascii_only=not _can_draw_blocks()))
                return
            from spikestore.live._watch_app import WatchApp

            WatchApp(follower.refresh, interval).run()
    except SpikestoreError as exc:
        fail(exc, where)


@click.command(name="watch")
@click.argument("path", type=StorePath(exists=True))
@click.option("--interval", type=click.FloatRange(0.05, MAX_INTERVAL), default=1.0, show_default=True,
              metavar="SECONDS", help=f"Seconds between refreshes (at most {MAX_INTERVAL:g}).")
@click.option("--once", is_flag=True,
              help="Print one plain-text snapshot and exit (also what happens when stdout is not a terminal).")
@storage_flags
def watch(path: Any, interval: float, once: bool, storage_option: tuple[str, ...],
          storage_options_json: str | None) -> None:
    """Follow the store at PATH while it is written: every stream's latest step, records, rate or mean
    history, dead and saturated neurons, bytes, drops and failures. Arrows pick a stream, Enter shows its
    neurons, q quits."""
    run_watch(location(path, storage_option, storage_options_json), interval=interval, once=once)
