"""SpikingJelly-compatible monitors that can stream to a :class:`~spikestore.Store`.

Switch one import and keep your code::

    from spikestore import monitor          # was: from spikingjelly.activation_based import monitor

Without ``store=`` each monitor behaves like SpikingJelly 2.0.0's: records in
a list (detached from the autograd graph), ``m[i]``, ``m["layer"]``,
``clear_recorded_data()``, ``enable()``/``disable()``, ``remove_hooks()``,
context manager. With ``store=`` every record goes to the store's writer as
stream ``<quantity>/<layer>``, as a snapshot taken before the hook returns
(later changes to the tensors do not reach the store), and ``records`` /
``m["layer"]`` become lazy, read-only views over the store (:class:`RecordsView`).

Selection (``every``, ``start``, ``stop``, ``batch``, ``neurons``) is
applied in the hook, before anything leaves the device.

Steps: records are keyed by the store's step (:meth:`Store.set_step
<spikestore.Store.set_step>`). Until you call ``set_step``, store-backed
monitors advance it themselves, by one at each forward pass of the network
they were given (steps 0, 1, 2, ...), once per forward however many monitors
share the store and network, and not while all of them are disabled. That is
one training step of a SpikingJelly network in multi-step mode
(``step_mode="m"``: one forward per batch) or of a plain PyTorch network. In
single-step mode (``step_mode="s"``) a forward pass is one *time* step, so
the step is left alone and a :class:`~spikestore.errors.MonitorWarning` says
once to call ``set_step`` per batch. Your first ``set_step`` stops the
automatic steps for good. A ``function_on_*`` that returns ``None`` records
nothing: a ``MonitorWarning`` says so once per layer.

:class:`GPUMonitor` is SpikingJelly's GPU monitor: a thread that reads each
GPU's utilisation and memory with ``nvidia-smi`` and logs them to
TensorBoard, and with ``store=`` also appends them to streams
``gpu_utilization/<gpu>`` and ``gpu_memory_used/<gpu>``.

The implementation is split by job: ``_monitors`` (the five monitors: which
hook, which value), ``_base`` (:class:`BaseMonitor`, SpikingJelly's API),
``_selection`` (what is recorded), ``_autostep`` (the step at each forward
pass), ``_records`` (record trees),
``_stored`` (records written to and read back from a store), ``_views``
(:class:`RecordsView`) and ``_gpu`` (:class:`GPUMonitor`).
"""

from __future__ import annotations

from spikestore.errors import MissingDependencyError

try:  # (the monitors hook torch modules; a reader-only install has no torch)
    import torch  # noqa: F401
except ImportError:
    raise MissingDependencyError(
        "spikestore.monitor records torch networks and needs torch: pip install 'spikestore[record]'") from None

from spikestore.monitor._base import BaseMonitor
from spikestore.monitor._gpu import GPUMonitor
from spikestore.monitor._monitors import (
    AttributeMonitor,
    GradInputMonitor,
    GradOutputMonitor,
    InputMonitor,
    OutputMonitor,
)
from spikestore.monitor._views import RecordsView

__all__ = [
    "AttributeMonitor",
    "BaseMonitor",
    "GPUMonitor",
    "GradInputMonitor",
    "GradOutputMonitor",
    "InputMonitor",
    "OutputMonitor",
    "RecordsView",
]
