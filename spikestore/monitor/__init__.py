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

The implementation is split by job: ``_monitors`` (the five monitors: which
hook, which value), ``_base`` (:class:`BaseMonitor`, SpikingJelly's API),
``_selection`` (what is recorded), ``_records`` (record trees),
``_stored`` (records written to and read back from a store) and ``_views``
(:class:`RecordsView`).
"""

from __future__ import annotations

from spikestore.monitor._base import BaseMonitor
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
    "GradInputMonitor",
    "GradOutputMonitor",
    "InputMonitor",
    "OutputMonitor",
    "RecordsView",
]
