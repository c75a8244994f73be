"""The stores of this process that are open for writing, closed at interpreter exit.

An open store is a live writer: it holds the writer lock and its thread
writes, until it is closed. A training script that forgets ``close()``
still gets its tail committed, because every open store is closed at exit;
a forked child (a DataLoader worker) forgets its parent's stores, which it
must never close.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import Protocol

__all__ = ["open_stores", "track", "untrack"]


class _Closable(Protocol):
    def close(self) -> None: ...


# Strong references: an open store must live until it is closed, at the latest at exit.
_OPEN: set[_Closable] = set()
_HOOKED = False


def _forget_all() -> None:
    _OPEN.clear()


os.register_at_fork(after_in_child=_forget_all)


def _close_all() -> None:
    for store in list(_OPEN):
        with contextlib.suppress(Exception):  # nothing useful to do at exit
            store.close()


def track(store: _Closable) -> None:
    """Keep ``store`` alive, and close it at exit unless it is untracked first."""
    global _HOOKED
    _OPEN.add(store)
    if not _HOOKED:
        # Closing drains the backlog on the writer's helper threads, which
        # come from a concurrent.futures pool. concurrent.futures refuses new
        # work once its own exit hook has run, and it registers that hook
        # through threading's private hook list (run before plain atexit
        # handlers, last in first out). Registering there too, after it,
        # closes stores while the pool still works. Where that private
        # function is missing, atexit is the fallback.
        register = getattr(threading, "_register_atexit", atexit.register)
        register(_close_all)
        _HOOKED = True


def untrack(store: _Closable) -> None:
    """Stop tracking ``store`` (it is closing)."""
    _OPEN.discard(store)


def open_stores() -> list[_Closable]:
    """The stores of this process open for writing now."""
    return list(_OPEN)
