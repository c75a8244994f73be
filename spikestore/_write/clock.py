"""The step a store keys its records by: :class:`StepClock`.

The step has one owner, the store's clock. You set it
(:meth:`Store.set_step <spikestore.Store.set_step>`); until you first do,
monitors may advance it (:meth:`StepClock.advance`, called at each forward
pass of a monitored network: :mod:`spikestore.monitor`). Once set by hand,
it is never advanced automatically again, so the two never disagree.
"""

from __future__ import annotations

from typing import Any

from spikestore._write.capture import check_step

__all__ = ["StepClock"]


class StepClock:
    """The current step of one store, and whether it is still advanced automatically.

    Parameters
    ----------
    step
        The first step (0, or the step after the last recorded one when a
        store is opened for append).
    """

    def __init__(self, step: int = 0) -> None:
        self._step = step
        self._automatic = True

    @property
    def step(self) -> int:
        """The step new records are keyed by."""
        return self._step

    @property
    def automatic(self) -> bool:
        """Whether :meth:`advance` still moves the step (``set`` has not been called)."""
        return self._automatic

    def set(self, step: Any) -> None:
        """Key new records by ``step`` from now on; automatic stepping stops for good.

        Raises
        ------
        InvalidArgumentError
            For a step the int64 step index cannot hold (see
            :func:`~spikestore._write.capture.check_step`); the step is unchanged.
        """
        self._step = check_step(step)
        self._automatic = False

    def advance(self) -> bool:
        """Move to the next step, unless the step was set by hand; return whether it moved."""
        if not self._automatic:
            return False
        self._step += 1
        return True
