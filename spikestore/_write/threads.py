"""How the writer's threads run: how many drain a backlog, and at what priority."""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["MAX_DRAIN_THREADS", "drain_threads", "lower_priority"]

#: Most threads that drain the queue while a flush or close waits.
MAX_DRAIN_THREADS = 4


def drain_threads() -> int:
    """Threads for draining a backlog: the cores this process may run on, capped."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DRAIN_THREADS, cores))


def lower_priority() -> None:
    """Give the writer thread a lower CPU priority than the training threads.

    On a machine whose cores the training loop keeps busy, a writer at equal
    priority takes a core away from PyTorch's intra-op threads in the middle
    of parallel regions, and every region then waits for the slowest thread.
    At nice 19 the writer runs in the gaps (Python overhead, data loading,
    synchronisation); if it falls behind, the bounded queue makes the
    producer wait rather than lose records. (``SCHED_IDLE`` was measured
    too, and was no better.) Linux only (threads are tasks there);
    elsewhere this does nothing.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
