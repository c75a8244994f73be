"""Memory and disk measurements for the workload benchmark's worker processes.

``tools/workload_worker.py`` measures each run with these: RSS now, peak RSS
over the timed phase (the kernel's high-water mark, reset at its start, so the
measurement costs nothing while the workload runs), and the bytes a store
holds on disk. They live apart from the worker so that what is measured
(``workload_worker``) and how memory is read (here) can be read separately.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

__all__ = ["MB", "PeakRSS", "disk_bytes", "remove_path", "rss_bytes"]

MB = 1 << 20


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or ``None`` where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """Resident set size of this process now."""
    v = _status_bytes("VmRSS")
    if v is not None:
        return v
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """Peak RSS of this process over a window.

    Uses the kernel's high-water mark (VmHWM), reset by writing 5 to
    ``/proc/self/clear_refs`` at :meth:`start`: exact, and free while the
    workload runs. Where that is not possible, a thread samples RSS with
    psutil every 5 ms (which can miss short peaks); :attr:`method` says which.
    """

    def __init__(self) -> None:
        self.method = ""
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin the window."""
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            if _status_bytes("VmHWM") is None:
                raise OSError("no VmHWM")
            self.method = "VmHWM"
            return
        except OSError:
            pass
        import psutil

        proc = psutil.Process()
        self.method = "psutil-5ms"
        self._peak = proc.memory_info().rss

        def loop() -> None:
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, proc.memory_info().rss)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """End the window; return the peak RSS in bytes."""
        if self.method == "VmHWM":
            return max(_status_bytes("VmHWM") or 0, rss_bytes())
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return max(self._peak, rss_bytes())


def disk_bytes(path: Path) -> int:
    """Apparent size of a store: the file, or every file under the directory."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while walking
                total += os.stat(os.path.join(root, name)).st_size
    return total


def remove_path(path: Path) -> None:
    """Delete a store (file or directory) if it exists."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()

