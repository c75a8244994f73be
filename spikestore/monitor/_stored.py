"""A store-backed monitor's records: :class:`StoredRecords`.

With ``store=`` a monitor keeps no records in memory. Each record is taken
apart into leaves (:mod:`spikestore.monitor._records`), each leaf goes to its
stream through :meth:`Store.append <spikestore.Store.append>`, and this class
remembers only where each leaf went (its index in the stream and its kind) so
that record ``i`` can be read back from the store and rebuilt. That is the
whole job here; the monitor decides *whether* to record (enable state,
steps, a closed store), and :class:`~spikestore.monitor.RecordsView` shows
the records as a list through the public methods below.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np
import torch

from spikestore._format import join_key
from spikestore._format.dtypes import LOSSY_DTYPES
from spikestore._write.store import Store, recorder
from spikestore.errors import InvalidValueError, RecordIndexError
from spikestore.monitor._records import KINDS, Path, Template, flatten, leaf_kind, leaf_quantity, rebuild
from spikestore.monitor._selection import Selection

__all__ = ["StoredRecords"]

_CODES = {kind: code for code, kind in enumerate(KINDS)}
_NUMBERS = {"bool": bool, "int": int, "float": float}


class _LayerLog:
    """Where each of one layer's records went: its structure, and per leaf stream its index and kind.

    Compact ``array`` columns (4 bytes per record, 9 per leaf stream and
    record), so a monitor on a long run holds megabytes, not the records. The
    kind of a leaf may change between records (SpikingJelly's ``v`` is a
    float before the first step), and a ``None`` leaf (a missing gradient) is
    written nowhere. So may the structure: a Norse cell's input is ``(x,
    None)`` at the first time step and ``(x, state)`` after it. Each record
    keeps the index of its :data:`Template`, and a leaf stream that a record
    has no leaf in holds kind ``"none"`` for it.
    """

    def __init__(self) -> None:
        self.templates: list[Template] = []  # the structures seen, in order
        self.template_index: dict[Template, int] = {}
        self.columns: list[list[int]] = []  # per template: the stream of each of its leaves
        self.keys: list[str] = []  # stream key per leaf stream
        self.key_index: dict[str, int] = {}
        self.announced: set[int] = set()  # leaf streams whose stream info was sent
        self.clear()

    def clear(self) -> None:
        self.structure = array("i")  # template of each record
        self.indices = [array("q") for _ in self.keys]
        self.kinds = [array("b") for _ in self.keys]

    def __len__(self) -> int:
        return len(self.structure)

    def add_stream(self, key: str) -> int:
        """Add a leaf stream, holding kind ``"none"`` for the records logged before it."""
        j = self.key_index[key] = len(self.keys)
        self.keys.append(key)
        self.indices.append(array("q", [-1]) * len(self))
        self.kinds.append(array("b", [_CODES["none"]]) * len(self))
        return j


class StoredRecords:
    """The records of one store-backed monitor: written to its store, read back on demand.

    Records are numbered in recording order over all layers, as in
    SpikingJelly's ``records`` list, and per layer, as in ``m["layer"]``.

    Parameters
    ----------
    store
        The store the records go to.
    quantity
        The monitor's stream name prefix (``output``, ``v``, ...).
    producer
        The monitor's class name, written into each stream's attrs and named
        in errors when another monitor claims the same stream.
    selection
        The monitor's selection, written into each stream's document.
    precision
        Passed to :meth:`Store.append <spikestore.Store.append>` for
        float32/float64 leaves. Every leaf is appended with ``copy=True``: a
        snapshot, which nothing the network does afterwards can change.
    """

    def __init__(self, store: Store, *, quantity: str, producer: str, selection: Selection,
                 precision: str | None = None) -> None:
        self._store = store
        self._quantity = quantity
        self._producer = producer
        self._selection = selection
        self._precision = precision
        self._order = array("i")  # layer id of each record
        self._layer_ids: dict[str, int] = {}
        self._layer_names: list[str] = []
        self._logs: dict[str, _LayerLog] = {}
        self._run: Any = None  # the reader, opened on the first read
        self._pending = 0  # records appended since the reader last caught up

    @property
    def store(self) -> Store:
        """The store the records are written to."""
        return self._store

    # -- reading (what RecordsView uses) -------------------------------------------
    def __len__(self) -> int:
        """Number of records of all layers since the last :meth:`clear`."""
        return len(self._order)

    def layer_len(self, layer: str) -> int:
        """Number of records of ``layer`` since the last :meth:`clear` (0 for a layer never recorded)."""
        log = self._logs.get(layer)
        return 0 if log is None else len(log)

    def layer_of(self, i: int) -> tuple[str, int]:
        """Layer of record ``i`` (``0 <= i < len(self)``) and its position among that layer's records."""
        if not 0 <= i < len(self._order):
            raise RecordIndexError(f"record {i} out of range ({len(self._order)} records)")
        lid = self._order[i]
        k = int(np.count_nonzero(np.frombuffer(self._order, dtype=np.int32)[:i] == lid))
        return self._layer_names[lid], k

    def positions(self, layer: str) -> list[int]:
        """Positions of ``layer``'s records among all records (SpikingJelly's ``name_records_index``)."""
        if layer not in self._layer_ids or not len(self._order):
            return []
        order = np.frombuffer(self._order, dtype=np.int32)
        return np.flatnonzero(order == self._layer_ids[layer]).tolist()

    def read(self, layer: str, k: int) -> Any:
        """Record ``k`` of ``layer``, read back from the store and rebuilt.

        Tensors come back as CPU tensors, numpy leaves as arrays, numbers as
        Python numbers, ``None`` leaves as ``None``. The store is flushed
        first if records were appended since the last read.
        """
        log = self._logs[layer]
        run = self._reader()
        template = log.structure[k]
        values: list[Any] = []
        for j in log.columns[template]:
            kind = KINDS[log.kinds[j][k]]
            if kind == "none":
                values.append(None)
                continue
            stream, i = run[log.keys[j]], log.indices[j][k]
            if kind == "tensor":
                values.append(stream.tensor(i))
            elif kind == "ndarray":
                values.append(stream[i])
            else:
                values.append(_NUMBERS[kind](stream[i].item()))
        return rebuild(log.templates[template], iter(values))

    def clear(self) -> None:
        """Forget the records (streams and data on disk are untouched)."""
        self._order = array("i")
        for log in self._logs.values():
            log.clear()

    def _reader(self) -> Any:
        store = self._store
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

    # -- writing (what the monitor's hooks use) ------------------------------------
    def write(self, layer: str, value: Any, *, step_mode: str) -> None:
        """Append one record of ``layer`` to the store.

        Parameters
        ----------
        layer
            The module's name in ``named_modules()``.
        value
            What ``function_on_*`` returned.
        step_mode
            The layer's SpikingJelly step mode (``"s"`` or ``"m"``), written
            into its streams' documents.

        The structure of ``value`` may differ from the layer's earlier
        records: each record is read back with its own.

        Raises
        ------
        InvalidValueError
            If ``value`` holds something no store can hold.
        InvalidArgumentError
            If another monitor already records to one of its streams.
        """
        store = self._store
        template, leaves = flatten(value)
        kinds = [leaf_kind(leaf) for _, leaf in leaves]
        for (_, leaf), kind in zip(leaves, kinds, strict=True):
            if kind == "":
                raise InvalidValueError(
                    f"layer {layer!r}, step {store.step}: cannot record a value of type "
                    f"{type(leaf).__module__}.{type(leaf).__qualname__}; function_on_* must return "
                    "tensors, numpy arrays, numbers, or tuples/lists/dicts of them")
        log = self._logs.get(layer)
        if log is None:
            log = self._new_log(layer)
        t = self._template(log, layer, template, leaves)
        row: dict[int, tuple[int, str]] = {}  # leaf stream: (index in it, kind)
        for j, (path, leaf), kind in zip(log.columns[t], leaves, kinds, strict=True):
            if kind == "none":
                row[j] = (-1, kind)
                continue
            if j not in log.announced:
                self._announce(log, j, path, kind, step_mode)
            idx = store.append(log.keys[j], leaf, copy=True, precision=self._lossy(leaf))
            if idx is None:  # dropped (on_full="drop"): the view skips this record
                return
            row[j] = (idx, kind)
        for j in range(len(log.keys)):
            idx, kind = row.get(j, (-1, "none"))
            log.indices[j].append(idx)
            log.kinds[j].append(_CODES[kind])
        log.structure.append(t)
        self._order.append(self._layer_ids[layer])
        self._pending += 1

    def release(self) -> None:
        """Give up this monitor's streams, so that another monitor may record to them."""
        rec = recorder(self._store)
        for log in self._logs.values():
            for key in log.keys:
                rec.release(key, self)

    def _lossy(self, leaf: Any) -> str | None:
        # Lossy precision applies to some float dtypes only; other leaves
        # of the same record (ints, spikes) stay exact.
        if self._precision is None or not isinstance(leaf, (torch.Tensor, np.ndarray)):
            return None
        dtype = str(leaf.dtype).removeprefix("torch.")
        return self._precision if dtype in LOSSY_DTYPES else None

    def _new_log(self, layer: str) -> _LayerLog:
        """Start the log of a layer's records."""
        log = self._logs[layer] = _LayerLog()
        if layer not in self._layer_ids:
            self._layer_ids[layer] = len(self._layer_names)
            self._layer_names.append(layer)
        return log

    def _template(self, log: _LayerLog, layer: str, template: Template, leaves: list[tuple[Path, Any]]) -> int:
        """The index of ``template`` in ``log``, added (and its new streams claimed) on its first record.

        A leaf at path ``p`` goes to stream ``<quantity>.<p...>/<layer>``
        (``<quantity>/<layer>`` for a record that is a single leaf), shared by
        every structure that has a leaf there.
        """
        t = log.template_index.get(template)
        if t is not None:
            return t
        what = f"a {self._producer} (quantity {self._quantity!r})"
        columns = []
        for path, _ in leaves:
            key = join_key(leaf_quantity(self._quantity, path), layer)
            j = log.key_index.get(key)
            if j is None:
                recorder(self._store).claim(key, self, what)
                j = log.add_stream(key)
            elif j in columns:
                raise InvalidValueError(
                    f"layer {layer!r}, step {self._store.step}: two leaves of one record would go to stream "
                    f"{key!r}; use dict keys that do not look like the paths of other leaves (no '.')")
            columns.append(j)
        t = log.template_index[template] = len(log.templates)
        log.templates.append(template)
        log.columns.append(columns)
        return t

    def _announce(self, log: _LayerLog, j: int, path: Path, kind: str, step_mode: str) -> None:
        """Tell the store what a leaf's stream holds, before its first record."""
        selection = self._selection.layout(step_mode).to_selection()
        attrs = {"monitor": self._producer, "value_type": kind,
                 "leaf_path": [p if isinstance(p, str) else int(p) for p in path]}
        self._store.set_stream_info(log.keys[j], selection=selection, attrs=attrs)
        log.announced.add(j)
