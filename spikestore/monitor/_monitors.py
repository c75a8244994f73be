"""SpikingJelly's five monitors, each one hook kind and one value taken from its arguments.

The monitors differ only in which hook they register on each monitored
module and which of the hook's arguments they record; everything else
(layers, records, selection, the store) is :class:`BaseMonitor`'s. The shared
shape (register one hook per module, record ``function_on_*`` of the
selected value while enabled) is written once in :class:`_HookMonitor`, so
each monitor states just its constructor, as SpikingJelly spells it, and its
value.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

from torch import nn

from spikestore.errors import MonitorWarning
from spikestore.monitor._base import BaseMonitor

__all__ = ["AttributeMonitor", "GradInputMonitor", "GradOutputMonitor", "InputMonitor", "OutputMonitor"]

#: The ``nn.Module.register_<kind>_hook`` a monitor uses.
HookKind = Literal["forward", "forward_pre", "full_backward"]


def _identity(x: Any) -> Any:
    return x


def _unpack_len1_tuple(x: Any) -> Any:
    # SpikingJelly unwraps single-element tuples (hook inputs, gradients).
    if isinstance(x, tuple) and len(x) == 1:
        return x[0]
    return x


class _HookMonitor(BaseMonitor):
    """A monitor recording one value per call of one hook on each monitored module."""

    def _hook_modules(self, net: nn.Module, instance: Any, kind: HookKind) -> None:
        """Register a ``kind`` hook (:meth:`create_hook`) on every ``instance`` module of ``net``."""
        self._none_warned: set[str] = set()
        for name, module in self._monitor_modules(net, instance):
            register = getattr(module, f"register_{kind}_hook")
            self.hooks.append(register(self.create_hook(name)))

    def create_hook(self, name: str) -> Callable[..., None]:
        """The hook that records layer ``name``'s value while the monitor is enabled.

        Like SpikingJelly's, the hook keeps the monitor alive as long as the
        network: a store-backed monitor created without keeping a reference
        still records.
        """

        def hook(module: nn.Module, *args: Any) -> None:
            if self.is_enable():
                self._record(name, self._value(name, module, *args))

        return hook

    #: The attribute holding the monitor's ``function_on_*``.
    function_attr = "function_on_output"

    def _raw(self, module: nn.Module, *args: Any) -> Any:
        """The value one call of the hook sees, before selection and ``function_on_*``."""
        raise NotImplementedError

    def _value(self, name: str, module: nn.Module, *args: Any) -> Any:
        """What to record from one call of the hook on layer ``name``: ``function_on_*(selected value)``.

        A function that turns a value into ``None`` records nothing useful,
        which would otherwise go unnoticed until the data is read: warned
        once per layer. (A ``None`` the hook itself sees, such as the
        gradient of an input that needs none, is expected and not warned.)
        """
        raw = self._raw(module, *args)
        value = getattr(self, self.function_attr)(self._select(name, raw))
        if value is None and raw is not None and name not in self._none_warned:
            self._none_warned.add(name)
            warnings.warn(
                f"spikestore: {type(self).__name__}'s {self.function_attr} returned None for layer {name!r}, "
                "so its records are None and nothing is stored for them; return the value to record "
                "(a tensor, array or number, or a tuple/dict of them), e.g. lambda x: x.mean(), not a "
                "function that only prints or keeps the value elsewhere", MonitorWarning, stacklevel=3)
        return value


class OutputMonitor(_HookMonitor):
    """Record ``function_on_output(output)`` of every ``instance`` module of ``net``.

    Same signature as SpikingJelly's ``OutputMonitor``, plus the keyword-only
    parameters of :class:`BaseMonitor`. Streams: ``output/<layer>``.
    """

    quantity = "output"

    def __init__(self, net: nn.Module, instance: Any = None,
                 function_on_output: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function_on_output = function_on_output
        self._hook_modules(net, instance, "forward")

    def _raw(self, module: nn.Module, *args: Any) -> Any:
        _inputs, output = args
        return _unpack_len1_tuple(output)


class InputMonitor(_HookMonitor):
    """Record ``function_on_input(input)`` before every ``instance`` module runs.

    Streams: ``input/<layer>``. With a store, each input is a snapshot: a
    module (or caller) that changes it in place afterwards leaves the record as
    the hook saw it.
    """

    quantity = "input"

    def __init__(self, net: nn.Module, instance: Any = None,
                 function_on_input: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function_on_input = function_on_input
        self._hook_modules(net, instance, "forward_pre")

    function_attr = "function_on_input"

    def _raw(self, module: nn.Module, *args: Any) -> Any:
        (inputs,) = args
        return _unpack_len1_tuple(inputs)


class AttributeMonitor(_HookMonitor):
    """Record ``function_on_attribute(m.<attribute_name>)`` of every ``instance`` module.

    ``pre_forward=True`` reads the attribute before the forward pass (so the
    first record of SpikingJelly's ``v`` is the float ``v_reset``), otherwise
    after it. Streams: ``<attribute_name>/<layer>``.
    """

    def __init__(self, attribute_name: str, pre_forward: bool, net: nn.Module, instance: Any = None,
                 function_on_attribute: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        self.quantity = attribute_name
        super().__init__(**kwargs)
        self.attribute_name = attribute_name
        self.function_on_attribute = function_on_attribute
        self._hook_modules(net, instance, "forward_pre" if pre_forward else "forward")

    function_attr = "function_on_attribute"

    def _raw(self, module: nn.Module, *args: Any) -> Any:
        return getattr(module, self.attribute_name)


class GradInputMonitor(_HookMonitor):
    """Record ``function_on_grad_input(dL/dX)`` of every ``instance`` module.

    Streams: ``grad_input/<layer>``. A ``None`` gradient (an input that does
    not require grad) is kept as ``None`` in the view and not written.
    """

    quantity = "grad_input"

    def __init__(self, net: nn.Module, instance: Any = None,
                 function_on_grad_input: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function_on_grad_input = function_on_grad_input
        self._hook_modules(net, instance, "full_backward")

    function_attr = "function_on_grad_input"

    def _raw(self, module: nn.Module, *args: Any) -> Any:
        grad_input, _grad_output = args
        return _unpack_len1_tuple(grad_input)


class GradOutputMonitor(_HookMonitor):
    """Record ``function_on_grad_output(dL/dY)`` of every ``instance`` module.

    Streams: ``grad_output/<layer>``.
    """

    quantity = "grad_output"

    def __init__(self, net: nn.Module, instance: Any = None,
                 function_on_grad_output: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function_on_grad_output = function_on_grad_output
        self._hook_modules(net, instance, "full_backward")

    function_attr = "function_on_grad_output"

    def _raw(self, module: nn.Module, *args: Any) -> Any:
        _grad_input, grad_output = args
        return _unpack_len1_tuple(grad_output)
