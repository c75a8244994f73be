"""Follow a run while it is written: incremental summaries of every stream (``spikestore watch`` and
``spikestore serve`` show them).

::

    from spikestore.live import Follower

    with Follower("run.zarr", window=100, history=2000) as f:
        snap = f.refresh()          # decodes only what was committed since the last refresh
        s = snap.streams["output/fc1"]
        s.steps, s.rate, s.dead_fraction, s.records_per_second

A :class:`Follower` reads through the public reader only: committed records,
never the writer's lock, nothing written. What each field means and what it
costs is in ``docs/live.md``.
"""

from __future__ import annotations

from spikestore.live._follower import Follower
from spikestore.live._snapshot import Snapshot, StreamSummary

__all__ = ["Follower", "Snapshot", "StreamSummary"]
