"""How the writer's threads run: how many drain a backlog, at what priority, and its helpers."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all

__all__ = ["MAX_DRAIN_THREADS", "HelperThreads", "drain_threads", "lower_priority"]

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


class HelperThreads:
    """Runs independent jobs on the calling thread and up to ``count - 1`` helper threads.

    The helpers start on first use and run at the writer's priority.

    Parameters
    ----------
    count
        Threads a batch of jobs may use, the calling thread included (1: it alone).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._pool: ThreadPoolExecutor | None = None

    def run(self, jobs: list[Callable[[], None]]) -> None:
        """Run ``jobs``; return once every started job has ended, raising the first failure.

        A failure stops the jobs not started yet. A helper that cannot start
        fails the batch too, after the jobs already running have ended, so
        that none outlives this call.
        """
        if len(jobs) < 2 or self.count < 2:
            for job in jobs:
                job()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.count - 1, thread_name_prefix="spikestore-writer-helper",
                                            initializer=lower_priority)
        todo = deque(jobs)

        def work() -> None:
            while True:
                try:
                    job = todo.popleft()
                except IndexError:
                    return
                try:
                    job()
                except BaseException:
                    todo.clear()  # the batch fails: no point starting more
                    raise

        helpers: list[Future[None]] = []
        try:
            for _ in range(min(self.count - 1, len(jobs) - 1)):
                helpers.append(self._pool.submit(work))
            work()
        except BaseException:
            todo.clear()  # (also when a helper could not start: none may outlive this call)
            raise
        finally:
            wait_all(helpers)
        for h in helpers:
            h.result()

    def shutdown(self) -> None:
        """Stop the helper threads, once their jobs have ended."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
