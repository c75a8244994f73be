"""The terminal view of ``spikestore watch``: a textual app that follows a store.

A table lists every stream (the columns of :mod:`spikestore.live._watch_text`);
the arrows pick a stream, Enter opens its neurons below the table, Escape closes
them, ``q`` (or Ctrl-C) quits. Keys only: it works over SSH in any terminal, no mouse needed.
Refreshes run on a worker thread, one at a time (a refresh slower than the
interval skips ticks rather than piling up), so a slow store never freezes the keys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from spikestore.live._snapshot import Snapshot
from spikestore.live._watch_text import COLUMNS, LEFT_ALIGNED, neuron_lines, status_lines, stream_row

__all__ = ["WatchApp"]


def _cell(column: str, text: str) -> Text:
    """A table cell as plain text (never markup: a layer may be named ``blocks[0]``), numbers right-aligned."""
    return Text(text, justify="left" if column in LEFT_ALIGNED else "right")


class WatchApp(App[None]):
    """Follow a store: ``refresh()`` returns a new snapshot each time it is called (``Follower.refresh``)."""

    TITLE = "spikestore watch"
    CSS = """
    #status { height: auto; padding: 0 1; }
    #streams { height: 1fr; }
    #neurons { height: auto; max-height: 12; padding: 0 1; border-top: solid $primary; display: none; }
    #neurons.open { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("enter", "open_neurons", "neurons", priority=True),
        Binding("escape", "close_neurons", "close"),
    ]

    def __init__(self, refresh: Callable[[], Snapshot], interval: float) -> None:
        super().__init__()
        self._refresh_snapshot = refresh
        self._interval = interval
        self._busy = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._shown: str | None = None  # the stream whose neurons are open
        self._rows: dict[str, tuple[str, ...]] = {}  # the cells shown, per stream

    def compose(self) -> ComposeResult:
        yield Static("reading the store...", id="status")
        table: DataTable[str] = DataTable(id="streams", cursor_type="row", zebra_stripes=True)
        for name in COLUMNS:
            table.add_column(_cell(name, name), key=name)
        yield table
        yield Static("", id="neurons")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#streams", DataTable).focus()
        self._refresh()
        self.set_interval(self._interval, self._refresh)

    @work(thread=True, group="refresh")
    def _refresh(self) -> None:
        if not self._busy.acquire(blocking=False):
            return  # the previous refresh still runs
        try:
            snap = self._refresh_snapshot()
        except Exception as exc:  # noqa: BLE001 - any failure to read is shown, and the next tick tries again
            self.call_from_thread(self._show_error, exc)
        else:
            self.call_from_thread(self._show, snap)
        finally:
            self._busy.release()

    def _show_error(self, exc: BaseException) -> None:
        self.query_one("#status", Static).update(Text(f"cannot read the store: {exc} (retrying)"))

    def _show(self, snap: Snapshot) -> None:
        self._snapshot = snap
        self.query_one("#status", Static).update(Text("\n".join(status_lines(snap))))
        table = self.query_one("#streams", DataTable)
        for key, summary in snap.streams.items():
            cells = stream_row(summary, snap.failed.get(key))
            shown = self._rows.get(key)
            self._rows[key] = cells
            row = [_cell(name, cell) for name, cell in zip(COLUMNS, cells, strict=True)]
            if shown is None:
                table.add_row(*row, key=key)
                continue
            for name, old, cell in zip(COLUMNS, shown, row, strict=True):
                if str(cell) != old:  # only what changed is redrawn
                    table.update_cell(key, name, cell, update_width=True)
        self._show_neurons()

    def _selected(self) -> str | None:
        table = self.query_one("#streams", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    def _show_neurons(self) -> None:
        pane = self.query_one("#neurons", Static)
        if self._shown is None or self._snapshot is None:
            return
        key = self._selected() or self._shown
        summary = self._snapshot.streams.get(key)
        pane.update(Text("\n".join(neuron_lines(summary)) if summary is not None else f"{key}: gone"))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self._shown is not None:
            self._shown = self._selected()
            self._show_neurons()

    def action_open_neurons(self) -> None:
        self._shown = self._selected()
        if self._shown is None:
            return
        self.query_one("#neurons", Static).add_class("open")
        self._show_neurons()

    def action_close_neurons(self) -> None:
        self._shown = None
        self.query_one("#neurons", Static).remove_class("open")
