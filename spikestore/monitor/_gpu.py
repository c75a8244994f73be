"""GPU utilisation and memory over time: :class:`GPUMonitor`, SpikingJelly's, optionally into a store.

SpikingJelly's ``GPUMonitor`` is a thread that runs ``nvidia-smi`` every
``interval`` seconds and logs each GPU's utilisation (%) and memory used
(MiB) to TensorBoard (``<log_dir>/gpu_monitor``, tags ``utilization_<i>``
and ``memory_used_<i>``, one TensorBoard step per reading), or to its
logger when ``log_dir`` is ``None``. This one does the same, under the same
constructor, and with ``store=`` also appends every reading to the store,
keyed by the store's step at the time of the reading:

``gpu_utilization/<i>``   utilisation of GPU ``i`` in percent (an int64 scalar per reading)
``gpu_memory_used/<i>``   memory used on GPU ``i`` in MiB (an int64 scalar per reading)

so that a run's GPU load sits next to its spikes, in order within a step
(``calls``) when several readings fall in one step.

The first reading is taken by :meth:`GPUMonitor.start` itself, in the
calling thread (the constructor's, by default), so where the GPUs cannot be
read a :class:`~spikestore.errors.MonitorWarning` says so there, at once:
``nvidia-smi`` not on ``PATH``, or failing (no NVIDIA GPU or driver), or
printing what it cannot read. The monitor then stops reading, as
SpikingJelly's does (which only logs the error from its thread),
:attr:`GPUMonitor.error` keeps the reason, and training goes on; a later
reading that fails is reported the same way from the monitor's thread.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import subprocess
import threading
import warnings
from types import TracebackType
from typing import Any

import numpy as np

from spikestore._write.store import Store, recorder
from spikestore.errors import InvalidArgumentError, MissingDependencyError, MonitorWarning, SpikestoreError

__all__ = ["GPU_QUANTITIES", "GPUMonitor"]

_log = logging.getLogger("spikestore")

#: The store's quantity of each reading, and its unit: streams ``<quantity>/<gpu index>``.
GPU_QUANTITIES = {"gpu_utilization": "%", "gpu_memory_used": "MiB"}


class GPUMonitor(threading.Thread):
    """Record the utilisation and memory used of ``gpu_ids`` every ``interval`` seconds, in a thread.

    Parameters
    ----------
    log_dir
        Folder for the TensorBoard event files (in ``<log_dir>/gpu_monitor``;
        needs the ``tensorboard`` package). ``None``: each reading is logged
        at INFO level to the ``spikestore`` logger instead.
    gpu_ids
        The GPUs to read, as ``nvidia-smi -i`` numbers them, e.g. ``(0, 1)``.
    interval
        Seconds between readings; the first is taken by :meth:`start`.
    start_now
        Take the first reading and start the thread now (the constructor
        then waits for one ``nvidia-smi`` run); otherwise call :meth:`start`.
    store
        Also append every reading to this store (keyword only): streams
        ``gpu_utilization/<i>`` and ``gpu_memory_used/<i>``, keyed by the
        store's step when the reading is taken. Its streams are described
        (monitor, unit, source) at the first reading.

    Raises
    ------
    InvalidArgumentError
        (a ``ValueError``) if ``gpu_ids`` is empty or ``interval`` is not positive.
    MissingDependencyError
        If ``log_dir`` is given and ``tensorboard`` is not installed.

    Notes
    -----
    Call :meth:`stop` (then ``join()``) when training is done, or use the
    monitor as a context manager: the thread is not a daemon and runs until
    stopped, as SpikingJelly's does.
    """

    def __init__(self, log_dir: str | None = None, gpu_ids: tuple[int, ...] = (0,), interval: float = 600.0,
                 start_now: bool = True, *, store: Store | None = None) -> None:
        super().__init__(name="spikestore-gpu-monitor")
        if not gpu_ids:
            raise InvalidArgumentError("GPUMonitor: gpu_ids must name at least one GPU, e.g. gpu_ids=(0,)")
        if not interval > 0:
            raise InvalidArgumentError(f"GPUMonitor: interval must be a positive number of seconds, not {interval!r}")
        self.log_dir = log_dir
        self.gpu_ids = gpu_ids
        self.interval = interval
        self.store = store
        self.command = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used",
                        "--format=csv,noheader,nounits", "-i", ",".join(map(str, gpu_ids))]
        #: Readings taken so far (the TensorBoard step of the next one).
        self.step = 0
        #: The TensorBoard writer, from the first reading on when there is a ``log_dir``.
        self.writer: Any = None
        #: Why the monitor stopped reading the GPUs (``None`` while it reads them, or once stopped by :meth:`stop`).
        self.error: str | None = None
        self._stop_event = threading.Event()
        self._announced = False
        self._writer_class: Any = _summary_writer_class() if log_dir is not None else None
        if store is not None:
            self._claim(store)
        if shutil.which(self.command[0]) is None:
            self._fail(f"{self.command[0]} was not found on PATH; it comes with the NVIDIA driver, so on a "
                       "machine without an NVIDIA GPU there is nothing to record (on one with a GPU, add the "
                       "driver's folder to PATH)", stacklevel=3)
        if start_now:
            self.start()

    # -- SpikingJelly's API ------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the thread to stop, waking it if it waits for the next reading; ``join()`` waits for it."""
        self._stop_event.set()

    def start(self) -> None:
        """Take the first reading now, in the calling thread, then start the thread that takes the others.

        So a machine where ``nvidia-smi`` cannot read the GPUs is reported
        where the monitor is made or started, and the first reading is in
        TensorBoard and the store when this returns.
        """
        if self.ident is None and self.error is None and not self._stop_event.is_set():
            self._take()
        super().start()

    def run(self) -> None:
        """Read the GPUs every ``interval`` seconds until stopped or a reading fails (the thread's body)."""
        try:
            while self.error is None and not self._stop_event.wait(self.interval):
                self._take()
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.store is not None:
                self._release(self.store)

    # -- spikestore's additions ----------------------------------------------------------------
    def __enter__(self) -> GPUMonitor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the thread and wait for it (its last reading written, the TensorBoard file closed)."""
        self.stop()
        if self.is_alive():
            self.join()

    def _keys(self) -> list[str]:
        """The store's stream keys this monitor appends to."""
        return [f"{quantity}/{i}" for i in self.gpu_ids for quantity in GPU_QUANTITIES]

    # -- one reading -----------------------------------------------------------------------------
    def _take(self) -> None:
        """Read the GPUs and record the reading; after a failed one :attr:`error` says why."""
        samples = self._read()
        if samples is not None:
            self._record(samples)
            self.step += 1

    def _read(self) -> list[tuple[str, int, int]] | None:
        """``(index, utilisation %, memory used MiB)`` of each GPU, or ``None`` after warning why there is none."""
        try:
            done = subprocess.run(self.command, check=False, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as error:
            self._fail(f"running {self.command[0]} failed: {error}")
            return None
        if done.returncode:
            self._fail(f"{' '.join(self.command)} exited with code {done.returncode}: "
                       f"{(done.stderr or done.stdout).strip() or 'no message'} (no NVIDIA GPU or driver?)")
            return None
        output = done.stdout.strip()
        if not output:
            self._fail(f"{' '.join(self.command)} printed no reading")
            return None
        samples = []
        for line in output.splitlines():
            fields = [value.strip() for value in line.split(",")]
            try:
                index, utilization, memory_used = fields
                samples.append((index, int(utilization), int(memory_used)))
            except ValueError:
                self._fail(f"{self.command[0]} printed a line that is not 'index, utilization %, "
                           f"memory MiB': {line!r}")
                return None
        return samples

    def _record(self, samples: list[tuple[str, int, int]]) -> None:
        """Log one reading to TensorBoard (or the logger) and to the store."""
        if self.log_dir is None:
            _log.info("GPU monitor sample at %s:\n%s", datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
                      "\n".join(", ".join(map(str, s)) for s in samples))
        else:
            if self.writer is None:  # (at the first reading: no empty event file where the GPUs cannot be read)
                self.writer = self._writer_class(os.path.join(self.log_dir, "gpu_monitor"))
            for index, utilization, memory_used in samples:
                self.writer.add_scalar(f"utilization_{index}", utilization, self.step)
                self.writer.add_scalar(f"memory_used_{index}", memory_used, self.step)
        store = self.store
        if store is None:
            return
        try:
            if not self._announced:  # (at the first reading, taken by start() in the caller's thread)
                self._describe(store)
            for index, utilization, memory_used in samples:
                store.append(f"gpu_utilization/{index}", np.int64(utilization), encoding="raw")  # (0 and 1 too)
                store.append(f"gpu_memory_used/{index}", np.int64(memory_used), encoding="raw")
        except SpikestoreError as error:  # (a closed or failed store: TensorBoard goes on)
            self.store = None
            warnings.warn(f"spikestore: GPUMonitor stopped appending GPU readings to {store.path}: {error}; "
                          "stop the GPUMonitor (stop(), then join()) before closing its store", MonitorWarning,
                          stacklevel=2)

    def _fail(self, reason: str, *, stacklevel: int = 4) -> None:
        """Keep ``reason`` as :attr:`error` and warn that no more readings are taken."""
        self.error = reason
        warnings.warn(f"spikestore: GPUMonitor records no GPU readings: {reason}", MonitorWarning,
                      stacklevel=stacklevel)

    # -- the store's streams -------------------------------------------------------------------
    def _claim(self, store: Store) -> None:
        """Reserve this monitor's streams: two monitors never interleave their readings in one stream."""
        rec = recorder(store)
        for key in self._keys():
            rec.claim(key, self, "a GPUMonitor")

    def _describe(self, store: Store) -> None:
        """Name the monitor, the unit and the source in each stream's attrs."""
        self._announced = True
        for key in self._keys():
            quantity = key.split("/", 1)[0]
            store.set_stream_info(key, attrs={"monitor": type(self).__name__, "unit": GPU_QUANTITIES[quantity],
                                              "source": "nvidia-smi"})

    def _release(self, store: Store) -> None:
        rec = recorder(store)
        for key in self._keys():
            rec.release(key, self)


def _summary_writer_class() -> Any:
    """TensorBoard's ``SummaryWriter`` as torch offers it, or a clear error without the ``tensorboard`` package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingDependencyError(
            "GPUMonitor(log_dir=...) writes TensorBoard event files and needs tensorboard: pip install tensorboard "
            "(or pass log_dir=None to log the readings instead)") from None
    return SummaryWriter
