"""SpikingJelly-compatible monitors that can stream to a :class:`~spikestore.Store`.

Switch one import and keep your code::

    from spikestore import monitor          # was: from spikingjelly.activation_based import monitor

Without ``store=`` each monitor behaves like SpikingJelly 2.0.0's: records in
a list (detached from the autograd graph), ``m[i]``, ``m["layer"]``,
``clear_recorded_data()``, ``enable()``/``disable()``, ``remove_hooks()``,
context manager. With ``store=`` every record goes to the store's writer as
stream ``<quantity>/<layer>``, and ``records`` / ``m["layer"]`` become lazy,
read-only views over the store.

Selection (``every``, ``start``, ``stop``, ``batch``, ``neurons``) is
applied in the hook, before anything leaves the device.
"""

from __future__ import annotations

import os
import warnings
from array import array
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from spikestore.errors import InvalidArgumentError, InvalidValueError
from spikestore.codecs._precision import check_precision
from spikestore._write.store import Store

__all__ = [
    "AttributeMonitor",
    "BaseMonitor",
    "GradInputMonitor",
    "GradOutputMonitor",
    "InputMonitor",
    "OutputMonitor",
]

Index = int | slice | Sequence[int] | np.ndarray | torch.Tensor | None


def _identity(x: Any) -> Any:
    return x


def _unpack_len1_tuple(x: Any) -> Any:
    # SpikingJelly unwraps single-element tuples (hook inputs, gradients).
    if isinstance(x, tuple) and len(x) == 1:
        return x[0]
    return x


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, tuple):
        return tuple(_detach(v) for v in x)
    if isinstance(x, list):
        return [_detach(v) for v in x]
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


# -- record structure -------------------------------------------------------------
# A record is a leaf (tensor, array, number, None) or a tuple/list/dict of
# records. Leaves become sibling streams: the leaf at path (0,) of quantity
# "output" is stream "output.0/<layer>", at path ("rate",) "output.rate/<layer>".

def _leaf_kind(x: Any) -> str:
    if x is None:
        return "none"
    if isinstance(x, torch.Tensor):
        return "tensor"
    if isinstance(x, np.ndarray):
        return "ndarray"
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float"
    if isinstance(x, np.generic):
        return "ndarray"
    return ""


def _flatten(x: Any, path: tuple[Any, ...] = ()) -> tuple[Any, list[tuple[tuple[Any, ...], Any]]]:
    """Return (template, [(path, leaf)]) of a record."""
    if isinstance(x, (tuple, list)):
        leaves: list[tuple[tuple[Any, ...], Any]] = []
        parts = []
        for i, v in enumerate(x):
            t, sub = _flatten(v, (*path, i))
            parts.append(t)
            leaves.extend(sub)
        return (type(x).__name__, tuple(parts)), leaves
    if isinstance(x, dict):
        leaves = []
        parts = []
        for k, v in x.items():
            if not isinstance(k, str) or not k or "/" in k:
                raise InvalidValueError(f"dict keys of recorded values must be non-empty str without '/', not {k!r}")
            t, sub = _flatten(v, (*path, k))
            parts.append((k, t))
            leaves.extend(sub)
        return ("dict", tuple(parts)), leaves
    return ("leaf", None), [(path, x)]


def _rebuild(template: Any, leaves: Iterator[Any]) -> Any:
    kind, body = template
    if kind == "leaf":
        return next(leaves)
    if kind == "dict":
        return {k: _rebuild(t, leaves) for k, t in body}
    items = [_rebuild(t, leaves) for t in body]
    return tuple(items) if kind == "tuple" else items


def _quantity(base: str, path: tuple[Any, ...]) -> str:
    return ".".join([base, *(str(p) for p in path)])


# -- selection ---------------------------------------------------------------------
def _index_doc(ix: Index) -> Any:
    if ix is None:
        return None
    if isinstance(ix, slice):
        return {"slice": [ix.start, ix.stop, ix.step]}
    if isinstance(ix, (int, np.integer)) and not isinstance(ix, bool):
        return [int(ix)]
    arr = ix.detach().cpu().numpy() if isinstance(ix, torch.Tensor) else np.asarray(ix)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise InvalidArgumentError(f"a batch/neurons selection must be an int, slice or 1-D int sequence, not {ix!r}")
    return [int(v) for v in arr]


class _Selection:
    """Which steps, samples and neurons a monitor records."""

    def __init__(self, every: int, start: int | None, stop: int | None, batch: Index,
                 neurons: Index) -> None:
        if not isinstance(every, int) or every < 1:
            raise InvalidArgumentError(f"every must be an int >= 1, not {every!r}")
        for name, v in (("start", start), ("stop", stop)):
            if v is not None and (not isinstance(v, int) or v < 0):
                raise InvalidArgumentError(f"{name} must be None or an int >= 0, not {v!r}")
        self.every, self.start, self.stop = every, start, stop
        self.batch_doc, self.neurons_doc = _index_doc(batch), _index_doc(neurons)
        self.batch = batch if isinstance(batch, slice) or batch is None else self.batch_doc
        self.neurons = neurons if isinstance(neurons, slice) or neurons is None else self.neurons_doc
        self._cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    @property
    def trivial(self) -> bool:
        return self.every == 1 and self.start is None and self.stop is None and \
            self.batch is None and self.neurons is None

    def wants(self, step: int) -> bool:
        if self.start is not None and step < self.start:
            return False
        if self.stop is not None and step >= self.stop:
            return False
        base = self.start or 0
        return (step - base) % self.every == 0

    def _ix(self, which: str, ix: Any, device: torch.device) -> Any:
        if isinstance(ix, slice):
            return ix
        t = self._cache.get((which, device))
        if t is None:
            t = self._cache[(which, device)] = torch.as_tensor(ix, dtype=torch.long, device=device)
        return t

    def apply(self, x: Any, batch_axis: int) -> Any:
        """Select samples and neurons of every tensor in ``x`` (on its device)."""
        if self.batch is None and self.neurons is None:
            return x
        if isinstance(x, (tuple, list)):
            return type(x)(self.apply(v, batch_axis) for v in x)
        if not isinstance(x, torch.Tensor) or x.dim() <= batch_axis:
            return x
        if self.batch is not None:
            ix = self._ix("batch", self.batch, x.device)
            x = x[(slice(None),) * batch_axis + (ix,)]
        if self.neurons is not None:
            x = x.flatten(batch_axis + 1) if x.dim() > batch_axis + 1 else x.unsqueeze(-1)
            x = x[..., self._ix("neurons", self.neurons, x.device)]
        return x

    def doc(self, step_mode: str, batch_axis: int) -> dict[str, Any]:
        return {"every": self.every, "start": self.start, "stop": self.stop,
                "batch": self.batch_doc, "neurons": self.neurons_doc,
                "step_mode": step_mode, "batch_axis": batch_axis}


# -- store-backed views ---------------------------------------------------------------
_KIND_CODES = {"none": 0, "tensor": 1, "ndarray": 2, "bool": 3, "int": 4, "float": 5}
_CODE_KINDS = {v: k for k, v in _KIND_CODES.items()}


class _LayerLog:
    """Where each of one layer's records went: per leaf, its stream index and kind.

    Compact ``array`` columns (9 bytes per leaf and record), so a monitor on
    a long run holds megabytes, not the records. The kind of a leaf may change
    between records (SpikingJelly's ``v`` is a float before the first step),
    and a ``None`` leaf (a missing gradient) is written nowhere.
    """

    def __init__(self, template: Any, keys: list[str]) -> None:
        self.template = template
        self.keys = keys  # stream key per leaf
        self.announced: set[int] = set()  # leaves whose stream info was sent
        self.clear()

    def clear(self) -> None:
        self.indices = [array("q") for _ in self.keys]
        self.kinds = [array("b") for _ in self.keys]

    def __len__(self) -> int:
        return len(self.kinds[0]) if self.kinds else 0


class RecordsView(Sequence[Any]):
    """Lazy, read-only list of a store-backed monitor's records.

    Items are read back from the store (flushing first when needed) and are
    equal to what SpikingJelly's in-memory monitor would hold (CPU tensors).
    ``clear()`` forgets the records in this view; data on disk stays.
    """

    def __init__(self, monitor: BaseMonitor, layer: str | None = None) -> None:
        self._m = monitor
        self._layer = layer

    def __len__(self) -> int:
        if self._layer is None:
            return len(self._m._order)
        log = self._m._logs.get(self._layer)
        return 0 if log is None else len(log)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"record {i} out of range ({n} records)")
        if self._layer is None:
            order = self._m._order
            lid = order[j]
            name = self._m._layer_names[lid]
            k = int(np.count_nonzero(np.frombuffer(order, dtype=np.int32)[:j] == lid))
        else:
            name, k = self._layer, j
        return self._m._read(name, k)

    def __iter__(self) -> Iterator[Any]:
        for j in range(len(self)):
            yield self[j]

    def clear(self) -> None:
        """Forget the records in this view (nothing on disk is deleted)."""
        self._m.clear_recorded_data()

    def __repr__(self) -> str:
        # Printed like the list SpikingJelly keeps (the tutorial prints it),
        # but a long view is summarised instead of read whole from disk.
        n = len(self)
        if n <= _REPR_RECORDS:
            return repr(list(self))
        head = ", ".join(repr(self[i]) for i in range(2))
        return f"[{head}, ... {n - 2} more records in {self._m._store.path}]"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, tuple, RecordsView)) or len(other) != len(self):
            return False
        return all(_same(a, b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]


_REPR_RECORDS = 20


def _same(a: Any, b: Any) -> bool:
    """Equality of records that may hold tensors (list == would be ambiguous)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
            and torch.equal(a.detach().cpu(), b.detach().cpu())
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- monitors --------------------------------------------------------------------------
class BaseMonitor:
    """Base class of the monitors: hooks, layers, records, enable state.

    Parameters (keyword-only, beyond SpikingJelly's)
    ------------------------------------------------
    store
        A :class:`~spikestore.Store`, or a path for a new store that the
        monitor then owns (and closes in :meth:`close`). ``None`` keeps the
        records in memory, as SpikingJelly does.
    every, start, stop
        Record only steps ``start <= step < stop`` with
        ``(step - start) % every == 0`` (the store's step, see
        :meth:`Store.set_step`; in-memory monitors count forward calls of the
        whole network as steps only if you call :meth:`set_step`).
    batch, neurons
        Index selections applied in the hook: ``batch`` on the batch axis
        (axis 1 in multi-step mode ``[T, N, ...]``, axis 0 in single-step
        mode ``[N, ...]``), ``neurons`` on the flattened axes after it, so a
        record becomes ``[T, N', K]`` or ``[N', K]``. Applied before
        ``function_on_*``.
    copy
        Copy CPU tensors in the hook (needed only for layers that modify
        their outputs in place after the hook ran).
    precision
        Lossy storage of non-binary float records: ``"bf16"`` or
        ``"keepbits:N"`` (see :mod:`spikestore.precision`); exact by default.
        Recorded in the stream's segments; spikes are always exact.
    quantity
        Stream name prefix instead of the default (``output``, ``input``,
        ``grad_input``, ``grad_output``, or the attribute name), so that two
        monitors of one kind can share a store, e.g. spikes and firing rates.
    """

    quantity = "output"

    def __init__(self, *, store: Store | str | os.PathLike[str] | None = None, every: int = 1,
                 start: int | None = None, stop: int | None = None, batch: Index = None,
                 neurons: Index = None, copy: bool = False, precision: str | None = None,
                 quantity: str | None = None) -> None:
        if quantity is not None:
            self.quantity = quantity
        self.hooks: list[Any] = []
        self.monitored_layers: list[str] = []
        self._records: list[Any] = []
        self._name_records_index: dict[str, list[int]] = {}
        self._enable = True
        self._selection = _Selection(every, start, stop, batch, neurons)
        self._copy = copy
        self._precision = check_precision(precision)
        self._owns_store = False
        self._store: Store | None = None
        self._mem_step = 0
        if store is not None:
            if isinstance(store, Store):
                self._store = store
            elif isinstance(store, (str, os.PathLike)):
                self._store = Store(store, mode="w")
                self._owns_store = True
            else:
                raise InvalidArgumentError(f"store must be a spikestore.Store or a path, not {type(store).__name__}")
        self._order = array("i")
        self._layer_ids: dict[str, int] = {}
        self._layer_names: list[str] = []
        self._logs: dict[str, _LayerLog] = {}
        self._run: Any = None
        self._read_at: int = -1
        self._pending = 0
        self._step_modes: dict[str, str] = {}

    # -- SpikingJelly API ------------------------------------------------------------
    @property
    def records(self) -> list[Any] | RecordsView:
        """The records, in recording order (a lazy view with a store)."""
        return self._records if self._store is None else RecordsView(self)

    @property
    def name_records_index(self) -> dict[str, list[int]]:
        """For each layer, the positions of its records in :attr:`records`."""
        if self._store is None:
            return self._name_records_index
        order = np.frombuffer(self._order, dtype=np.int32) if len(self._order) else np.zeros(0, np.int32)
        return {name: np.flatnonzero(order == self._layer_ids[name]).tolist()
                if name in self._layer_ids else [] for name in self.monitored_layers}

    def __getitem__(self, i: int | str) -> Any:
        if isinstance(i, str):
            if i not in self.monitored_layers:
                raise KeyError(i)
            if self._store is None:
                return [self._records[index] for index in self._name_records_index[i]]
            return RecordsView(self, i)
        if isinstance(i, int):
            return self.records[i]
        raise ValueError(i)

    def _monitor_modules(self, net: nn.Module, instance: Any) -> list[tuple[str, nn.Module]]:
        if instance is None:
            instance = type(net)
        modules = [(name, module) for name, module in net.named_modules() if isinstance(module, instance)]
        self.monitored_layers.extend(name for name, _ in modules)
        self._name_records_index.update((name, []) for name, _ in modules)
        for name, module in modules:
            self._step_modes[name] = getattr(module, "step_mode", "s")
        if self._store is not None:
            for name, _ in modules:
                self._store.stream_key(self.quantity, name)  # validates the quantity early
        return modules

    def clear_recorded_data(self) -> None:
        """Forget recorded data (with a store: empty the view; disk is untouched)."""
        self._records.clear()
        for v in self._name_records_index.values():
            v.clear()
        self._order = array("i")
        for log in self._logs.values():
            log.clear()

    def enable(self) -> None:
        self._enable = True

    def disable(self) -> None:
        self._enable = False

    def is_enable(self) -> bool:
        return self._enable

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        if self._store is not None:  # another monitor may now write these streams
            for log in self._logs.values():
                for key in log.keys:
                    self._store.release(key, self)

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
                 traceback: TracebackType | None) -> bool:
        self.close()
        return False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    # -- spikestore additions ------------------------------------------------------
    @property
    def store(self) -> Store | None:
        """The store records go to, or ``None`` for an in-memory monitor."""
        return self._store

    def set_step(self, step: int) -> None:
        """Step number used by ``every``/``start``/``stop`` for in-memory monitors."""
        self._mem_step = int(step)

    def _batch_axis(self, name: str) -> int:
        return 1 if self._step_modes.get(name) == "m" else 0

    def _select(self, name: str, x: Any) -> Any:
        try:
            return self._selection.apply(x, self._batch_axis(name))
        except (IndexError, RuntimeError) as exc:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidArgumentError(
                f"layer {name!r}: the batch/neurons selection does not fit its records of shape "
                f"{shape} (batch axis {self._batch_axis(name)}): {exc}; pick indices valid for "
                "every monitored layer, or monitor the layers separately") from exc

    def _record(self, name: str, value: Any) -> None:
        store = self._store
        step = store.step if store is not None else self._mem_step
        if not self._selection.wants(step):
            return
        if store is None:
            self._name_records_index[name].append(len(self._records))
            self._records.append(_detach(value))
            return
        self._record_to_store(store, name, value)

    def _owner_label(self) -> str:
        return f"a {type(self).__name__} (quantity {self.quantity!r})"

    def _record_to_store(self, store: Store, name: str, value: Any) -> None:
        if store.closed:
            # Training goes on after the store closed (evaluation, a second
            # phase): stop recording, say so once, and leave the network usable.
            self.disable()
            warnings.warn(
                f"spikestore: {type(self).__name__} on layers {self.monitored_layers} stopped recording "
                f"because its store {store.path} is closed; call remove_hooks() or close() on the "
                "monitor when the store closes", RuntimeWarning, stacklevel=3)
            return
        template, leaves = _flatten(value)
        log = self._logs.get(name)
        if log is None:
            log = self._new_log(store, name, template, leaves)
        elif template != log.template:
            raise InvalidValueError(
                f"layer {name!r}, step {store.step}: function_on_* returned a value of a different "
                f"structure than before ({template} vs {log.template}); return the same structure every call")
        kinds = [_leaf_kind(leaf) for _, leaf in leaves]
        for leaf, kind in zip(leaves, kinds):
            if kind == "":
                raise InvalidValueError(
                    f"layer {name!r}, step {store.step}: cannot record a value of type "
                    f"{type(leaf[1]).__module__}.{type(leaf[1]).__qualname__}; function_on_* must return "
                    "tensors, numpy arrays, numbers, or tuples/lists/dicts of them")
        indices = []
        for j, ((path, leaf), kind) in enumerate(zip(leaves, kinds)):
            if kind == "none":
                indices.append(-1)
                continue
            if j not in log.announced:
                self._announce(store, name, log, j, path, kind)
            idx = store.append(log.keys[j], leaf, copy=self._copy, precision=self._lossy(leaf))
            if idx is None:  # dropped (on_full="drop"): the view skips this record
                return
            indices.append(idx)
        for j, (idx, kind) in enumerate(zip(indices, kinds)):
            log.indices[j].append(idx)
            log.kinds[j].append(_KIND_CODES[kind])
        self._order.append(self._layer_ids[name])
        self._pending += 1

    def _lossy(self, leaf: Any) -> str | None:
        # Lossy precision applies to float32/float64 values only; other
        # leaves of the same record (ints, spikes) stay exact.
        if self._precision is None:
            return None
        dtype = leaf.dtype if isinstance(leaf, (torch.Tensor, np.ndarray)) else None
        return self._precision if dtype in (torch.float32, torch.float64, np.float32, np.float64) else None

    def _new_log(self, store: Store, name: str, template: Any, leaves: list[tuple[Any, Any]]) -> _LayerLog:
        single = len(leaves) == 1 and leaves[0][0] == ()
        keys = [store.stream_key(self.quantity if single else _quantity(self.quantity, path), name)
                for path, _ in leaves]
        for key in keys:
            store.claim(key, self, self._owner_label())
        log = self._logs[name] = _LayerLog(template, keys)
        if name not in self._layer_ids:
            self._layer_ids[name] = len(self._layer_names)
            self._layer_names.append(name)
        return log

    def _announce(self, store: Store, name: str, log: _LayerLog, j: int, path: tuple[Any, ...],
                  kind: str) -> None:
        """Tell the store what a leaf's stream holds, before its first record."""
        batch_axis = self._batch_axis(name)
        store.set_stream_info(log.keys[j], selection=self._selection.doc(
            self._step_modes.get(name, "s"), batch_axis), attrs={
            "monitor": type(self).__name__, "value_type": kind,
            "leaf_path": [p if isinstance(p, str) else int(p) for p in path]})
        log.announced.add(j)

    def _reader(self) -> Any:
        store = self._store
        assert store is not None
        if self._pending or self._run is None:
            if not store.closed:
                store.flush()
            if self._run is None:
                from spikestore._read.run import open as open_run

                self._run = open_run(store.path)
            else:
                self._run.refresh()
            self._pending = 0
        return self._run

    def _read(self, name: str, k: int) -> Any:
        log = self._logs[name]
        run = self._reader()
        values = []
        for key, kinds, idx in zip(log.keys, log.kinds, log.indices, strict=True):
            kind = _CODE_KINDS[kinds[k]]
            if kind == "none":
                values.append(None)
                continue
            s = run[key]
            i = idx[k]
            if kind == "tensor":
                values.append(s.tensor(i))
            elif kind == "ndarray":
                values.append(s[i])
            else:
                values.append({"bool": bool, "int": int, "float": float}[kind](s[i].item()))
        return _rebuild(log.template, iter(values))


class OutputMonitor(BaseMonitor):
    """Record ``function_on_output(output)`` of every ``instance`` module of ``net``.

    Same signature as SpikingJelly's ``OutputMonitor``, plus the keyword-only
    parameters of :class:`BaseMonitor`. Streams: ``output/<layer>``.
    """

    quantity = "output"

    def __init__(self, net: nn.Module, instance: Any = None,
                 function_on_output: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function_on_output = function_on_output
        for name, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_forward_hook(self.create_hook(name)))

    def create_hook(self, name: str) -> Callable[..., None]:
        return _hook(self, name, lambda m, module, inputs, output:
                          m.function_on_output(m._select(name, _unpack_len1_tuple(output))))


class InputMonitor(BaseMonitor):
    """Record ``function_on_input(input)`` before every ``instance`` module runs.

    Streams: ``input/<layer>``. The default keeps a reference to the input;
    pass ``copy=True`` if a module modifies its input in place.
    """

    quantity = "input"

    def __init__(self, net: nn.Module, instance: Any = None,
                 function_on_input: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function_on_input = function_on_input
        for name, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_forward_pre_hook(self.create_hook(name)))

    def create_hook(self, name: str) -> Callable[..., None]:
        return _hook(self, name, lambda m, module, inputs:
                          m.function_on_input(m._select(name, _unpack_len1_tuple(inputs))))


class AttributeMonitor(BaseMonitor):
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
        for name, module in self._monitor_modules(net, instance):
            if pre_forward:
                self.hooks.append(module.register_forward_pre_hook(self.create_hook(name)))
            else:
                self.hooks.append(module.register_forward_hook(self.create_hook(name)))

    def create_hook(self, name: str) -> Callable[..., None]:
        return _hook(self, name, lambda m, module, *args:
                          m.function_on_attribute(m._select(name, getattr(module, m.attribute_name))))


class GradInputMonitor(BaseMonitor):
    """Record ``function_on_grad_input(dL/dX)`` of every ``instance`` module.

    Streams: ``grad_input/<layer>``. A ``None`` gradient (an input that does
    not require grad) is kept as ``None`` in the view and not written.
    """

    quantity = "grad_input"

    def __init__(self, net: nn.Module, instance: Any = None,
                 function_on_grad_input: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function_on_grad_input = function_on_grad_input
        for name, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_full_backward_hook(self.create_hook(name)))

    def create_hook(self, name: str) -> Callable[..., None]:
        return _hook(self, name, lambda m, module, grad_input, grad_output:
                          m.function_on_grad_input(m._select(name, _unpack_len1_tuple(grad_input))))


class GradOutputMonitor(BaseMonitor):
    """Record ``function_on_grad_output(dL/dY)`` of every ``instance`` module.

    Streams: ``grad_output/<layer>``.
    """

    quantity = "grad_output"

    def __init__(self, net: nn.Module, instance: Any = None,
                 function_on_grad_output: Callable[[Any], Any] = _identity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function_on_grad_output = function_on_grad_output
        for name, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_full_backward_hook(self.create_hook(name)))

    def create_hook(self, name: str) -> Callable[..., None]:
        return _hook(self, name, lambda m, module, grad_input, grad_output:
                          m.function_on_grad_output(m._select(name, _unpack_len1_tuple(grad_output))))


def _hook(monitor: BaseMonitor, name: str, extract: Callable[..., Any]) -> Callable[..., None]:
    """A hook that records ``extract(monitor, *hook_args)`` for layer ``name``.

    Like SpikingJelly's, the hook keeps the monitor alive as long as the
    network: a store-backed monitor created without keeping a reference
    still records.
    """

    def hook(module: nn.Module, *args: Any) -> None:
        if monitor._enable:
            monitor._record(name, extract(monitor, module, *args))

    return hook
