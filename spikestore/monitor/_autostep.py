"""The store's step, advanced by the monitors until you set it: :class:`AutoStep`.

A store whose :meth:`~spikestore.Store.set_step` was never called would key
every record at one step. Instead, each store-backed monitor puts the
network it was given (its root module) in the store's one :class:`AutoStep`
(:meth:`AutoStep.of`), which advances the step by one at each forward pass
of that network, the training step of a SpikingJelly multi-step network
(``step_mode="m"``: one forward per batch) or of a plain PyTorch one. The
step itself belongs to the store's clock
(:class:`~spikestore._write.clock.StepClock`), which stops taking these
steps for good once ``set_step`` is called.

What counts as one forward pass:

* one hook per store and network, however many monitors share them, so
  several monitors advance the step once;
* a network counts only while one of its monitors is enabled, so a
  validation pass with the monitors disabled does not skip steps;
* several networks on one store (an encoder and a decoder monitored
  separately, or a network and one of its parts) share the step: it
  advances when a network that already ran in the current step runs again,
  so one training step that runs each of them once is one step.

A network in single-step mode (``step_mode="s"``) is run once per time
step (``for t in range(T): net(x[t])``), so a forward pass is not a training
step there, and the records of one step must stay together (their calls
form the time axis, ``docs/format.md``). The step is then left alone and a
:class:`~spikestore.errors.MonitorWarning` says once to call ``set_step``.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

from torch import nn

from spikestore._write.store import Store, recorder
from spikestore.errors import MonitorWarning

__all__ = ["AutoStep", "single_step"]


def single_step(net: nn.Module) -> bool:
    """Whether ``net`` runs in SpikingJelly's single-step mode.

    The mode is the first one found in ``net.modules()`` order (``net``'s own,
    else its first SpikingJelly module's), which ``functional.set_step_mode``
    makes the mode of the whole network; a multi-step network that wraps
    single-step modules in a ``MultiStepContainer`` counts as multi-step. A
    network without SpikingJelly modules runs once per batch: not single-step.
    """
    for module in net.modules():
        mode = getattr(module, "step_mode", None)
        if mode is not None:
            return bool(mode == "s")
    return False


class AutoStep:
    """Advances one store's step at each forward pass of its monitored networks.

    Use :meth:`of`: a store has one, kept by its
    :class:`~spikestore._write.recorder.Recorder`.

    Parameters
    ----------
    store
        The store whose step to advance; held weakly, so a store nobody
        uses any more closes and goes.
    """

    @classmethod
    def of(cls, store: Store) -> AutoStep:
        """The one ``AutoStep`` of ``store`` (created on first use)."""
        rec = recorder(store)
        stepper = rec.stepper
        if not isinstance(stepper, AutoStep):
            stepper = rec.stepper = cls(store)
        return stepper

    def __init__(self, store: Store) -> None:
        self._store = weakref.ref(store)
        self._clock = recorder(store).clock
        self._monitors: weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet[Any]] = \
            weakref.WeakKeyDictionary()
        self._handles: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()
        self._ran: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # networks run in the current step
        self._warned = False

    def add(self, monitor: Any, net: nn.Module) -> None:
        """Count ``net``'s forward passes as steps while ``monitor`` (one of its monitors) is enabled."""
        if net not in self._monitors:
            # prepend: the step is new before any monitor's pre-hook on ``net`` records
            self._handles[net] = net.register_forward_pre_hook(self._before_forward, prepend=True)
            self._monitors[net] = weakref.WeakSet()
        self._monitors[net].add(monitor)

    def remove(self, monitor: Any) -> None:
        """Forget ``monitor``; a network left without monitors stops counting."""
        for net in list(self._monitors.keys()):
            monitors = self._monitors[net]
            monitors.discard(monitor)
            if not monitors:
                self._handles.pop(net).remove()
                del self._monitors[net]
                self._ran.discard(net)

    def _before_forward(self, net: nn.Module, args: Any) -> None:
        store = self._store()
        if store is None or store.closed or not self._clock.automatic:
            return
        if not any(m.is_enable() for m in self._monitors.get(net, ())):
            return
        if net not in self._ran:  # the first forward pass of this network in the current step
            self._ran.add(net)
            return
        if single_step(net):
            self._warn_single_step(store, net)
            return
        self._clock.advance()
        self._ran = weakref.WeakSet([net])

    def _warn_single_step(self, store: Store, net: nn.Module) -> None:
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            f"spikestore: {type(net).__name__} runs in single-step mode (step_mode='s'), where each "
            "forward pass is one time step, not one training step, so the store's step is not advanced "
            f"automatically and every record is keyed at step {store.step}; call store.set_step(step) "
            "once per batch, before its time steps", MonitorWarning, stacklevel=3)
