"""What every monitor shares: :class:`BaseMonitor`.

SpikingJelly's ``BaseMonitor`` API (``records``, ``m[i]``, ``m["layer"]``,
``monitored_layers``, ``name_records_index``, ``clear_recorded_data()``,
``enable()``/``disable()``/``is_enable()``, ``remove_hooks()``, context
manager, hooks removed on ``__del__``) plus spikestore's keyword-only
additions (``store=``, a selection, precision). A monitor decides here
whether a record is kept, then keeps it in a list, as SpikingJelly does, or
hands it to :class:`~spikestore.monitor._stored.StoredRecords` for its store.
Which hook a monitor registers and what it extracts from the hook's
arguments is each monitor's own business (:mod:`spikestore.monitor._monitors`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from types import TracebackType
from typing import Any

import torch
from torch import nn

from spikestore._format import join_key
from spikestore._format.layout import RecordLayout
from spikestore._write.store import Store
from spikestore.codecs._precision import check_precision
from spikestore.errors import InvalidArgumentError
from spikestore.monitor._autostep import AutoStep
from spikestore.monitor._records import detach
from spikestore.monitor._selection import Index, Selection
from spikestore.monitor._stored import StoredRecords
from spikestore.monitor._views import RecordsView

__all__ = ["BaseMonitor"]


class BaseMonitor:
    """Base class of the monitors: hooks, layers, records, enable state.

    The parameters are keyword-only, beyond SpikingJelly's.

    Parameters
    ----------
    store
        A :class:`~spikestore.Store`, or a path for a new store that the
        monitor then owns (and closes in :meth:`close`). ``None`` keeps the
        records in memory, as SpikingJelly does.
    every, start, stop
        Record only steps ``start <= step < stop`` with
        ``(step - start) % every == 0`` (the store's step, see
        :meth:`Store.set_step`; until you call it, the step advances by one
        at each forward pass of the monitored network in multi-step mode,
        see :mod:`spikestore.monitor`; in-memory monitors count forward calls
        of the whole network as steps only if you call :meth:`set_step`).
    batch, neurons
        Index selections applied in the hook: ``batch`` on the batch axis
        (axis 1 in multi-step mode ``[T, N, ...]``, axis 0 in single-step
        mode ``[N, ...]``), ``neurons`` on the flattened axes after it, so a
        record becomes ``[T, N', K]`` or ``[N', K]``. Applied before
        ``function_on_*``.
    copy
        ``True``, the only value: with a store, every record is a snapshot
        taken before the hook returns (a float32 CPU tensor of 0s and 1s is
        bit-packed, any other CPU tensor copied, a CUDA tensor cloned on the
        device), so what the store holds is what the hook saw, whatever the
        network or your code does to the tensors afterwards. ``copy=False``
        is refused: a network that changes a recorded tensor in place before
        the writer reads it would stop the stream. To hand over tensors
        without a copy, call :meth:`Store.append` with ``copy=False`` from
        your own hook. In-memory monitors (no store) keep references, as
        SpikingJelly's do.
    precision
        Lossy storage of non-binary float records: ``"bf16"`` or
        ``"keepbits:N"`` (see :mod:`spikestore.codecs._precision`); exact by default.
        Recorded in the stream's segments; spikes are always exact.
    quantity
        Stream name prefix instead of the default (``output``, ``input``,
        ``grad_input``, ``grad_output``, or the attribute name), so that two
        monitors of one kind can share a store, e.g. spikes and firing rates.
    """

    quantity = "output"

    def __init__(self, *, store: Store | str | os.PathLike[str] | None = None, every: int = 1,
                 start: int | None = None, stop: int | None = None, batch: Index = None,
                 neurons: Index = None, copy: bool = True, precision: str | None = None,
                 quantity: str | None = None) -> None:
        if quantity is not None:
            self.quantity = quantity
        self.hooks: list[Any] = []
        self.monitored_layers: list[str] = []
        self._records: list[Any] = []
        self._name_records_index: dict[str, list[int]] = {}
        self._enable = True
        self._selection = Selection(every, start, stop, batch, neurons)
        self._owns_store = False
        self._store: Store | None = None
        self._stored: StoredRecords | None = None
        self._mem_step = 0
        self._step_modes: dict[str, str] = {}
        precision = check_precision(precision)
        if not copy:
            raise InvalidArgumentError(
                f"{type(self).__name__}(copy={copy!r}): monitors always record snapshots (copy=True); "
                "for zero-copy recording call store.append(key, tensor, copy=False) from your own hook, "
                "and see Store.append for what you then promise")
        if store is not None:
            if isinstance(store, Store):
                self._store = store
            elif isinstance(store, (str, os.PathLike)):
                self._store = Store(store, mode="w")
                self._owns_store = True
            else:
                raise InvalidArgumentError(
                    f"store must be a spikestore.Store or a path, not {type(store).__name__}")
            self._stored = StoredRecords(self._store, quantity=self.quantity,
                                         producer=type(self).__name__, selection=self._selection,
                                         precision=precision)

    # -- SpikingJelly API ------------------------------------------------------------
    @property
    def records(self) -> list[Any] | RecordsView:
        """The records, in recording order (a lazy view with a store)."""
        return self._records if self._stored is None else RecordsView(self._stored)

    @property
    def name_records_index(self) -> dict[str, list[int]]:
        """For each layer, the positions of its records in :attr:`records`."""
        if self._stored is None:
            return self._name_records_index
        return {name: self._stored.positions(name) for name in self.monitored_layers}

    def __getitem__(self, i: int | str) -> Any:
        """Record ``i`` (an int), or the records of layer ``i`` (a str; a lazy view with a store)."""
        if isinstance(i, str):
            if i not in self.monitored_layers:
                raise KeyError(i)
            if self._stored is None:
                return [self._records[index] for index in self._name_records_index[i]]
            return RecordsView(self._stored, i)
        if isinstance(i, int):
            return self.records[i]
        raise ValueError(i)

    def _monitor_modules(self, net: nn.Module, instance: Any) -> list[tuple[str, nn.Module]]:
        """Add the ``instance`` modules of ``net`` (``net`` itself if ``None``) to the monitored layers."""
        if instance is None:
            instance = type(net)
        modules = [(name, module) for name, module in net.named_modules() if isinstance(module, instance)]
        self.monitored_layers.extend(name for name, _ in modules)
        self._name_records_index.update((name, []) for name, _ in modules)
        for name, module in modules:
            self._step_modes[name] = getattr(module, "step_mode", "s")
        if self._store is not None:
            for name, _ in modules:
                join_key(self.quantity, name)  # validates the quantity early
            AutoStep.of(self._store).add(self, net)  # the step follows net's forward passes
        return modules

    def clear_recorded_data(self) -> None:
        """Forget recorded data (with a store: empty the view; disk is untouched)."""
        self._records.clear()
        for v in self._name_records_index.values():
            v.clear()
        if self._stored is not None:
            self._stored.clear()

    def enable(self) -> None:
        """Record from now on."""
        self._enable = True

    def disable(self) -> None:
        """Stop recording until :meth:`enable` (the hooks stay in place)."""
        self._enable = False

    def is_enable(self) -> bool:
        """Whether the monitor records."""
        return self._enable

    def remove_hooks(self) -> None:
        """Remove the hooks from the network; with a store, free its streams for other monitors."""
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        if self._stored is not None:
            self._stored.release()
            AutoStep.of(self._stored.store).remove(self)

    def close(self) -> None:
        """Stop recording and remove the hooks; records stay readable.

        A store the monitor opened itself (``store=path``) is closed too.
        """
        self.disable()
        self.remove_hooks()
        if self._owns_store and self._store is not None and not self._store.closed:
            self._store.close()

    def __enter__(self) -> BaseMonitor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self.close()

    # -- spikestore additions ------------------------------------------------------
    @property
    def store(self) -> Store | None:
        """The store records go to, or ``None`` for an in-memory monitor."""
        return self._store

    def set_step(self, step: int) -> None:
        """Step number used by ``every``/``start``/``stop`` for in-memory monitors."""
        self._mem_step = int(step)

    # -- what the hooks call -------------------------------------------------------
    def _select(self, name: str, x: Any) -> Any:
        """``x`` (a record of layer ``name``) with the ``batch``/``neurons`` selection applied."""
        axis = RecordLayout(self._step_modes.get(name, "s")).batch_axis or 0
        try:
            return self._selection.apply(x, axis)
        except (IndexError, RuntimeError) as exc:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidArgumentError(
                f"layer {name!r}: the batch/neurons selection does not fit its records of shape "
                f"{shape} (batch axis {axis}): {exc}; pick indices valid for "
                "every monitored layer, or monitor the layers separately") from exc

    def _record(self, name: str, value: Any) -> None:
        """Keep ``value`` as a record of layer ``name`` if the selection wants this step."""
        stored = self._stored
        if stored is None:
            if self._selection.wants(self._mem_step):
                self._name_records_index[name].append(len(self._records))
                self._records.append(detach(value))
            return
        store = stored.store
        if not self._selection.wants(store.step):
            return
        if store.closed:
            # Training goes on after the store closed (evaluation, a second
            # phase): stop recording, say so once, and leave the network usable.
            self.disable()
            warnings.warn(
                f"spikestore: {type(self).__name__} on layers {self.monitored_layers} stopped recording "
                f"because its store {store.path} is closed; call remove_hooks() or close() on the "
                "monitor when the store closes", RuntimeWarning, stacklevel=2)
            return
        stored.write(name, value, step_mode=self._step_modes.get(name, "s"))
