"""What a store-backed monitor's ``records`` and ``m["layer"]`` are: :class:`RecordsView`.

SpikingJelly's monitors hand out plain lists, and code written for them
indexes, iterates, prints, compares and clears those lists. A store-backed
monitor keeps its records on disk, so it hands out a lazy, read-only view
that behaves like that list without reading the whole run into memory. The
view reads through :class:`~spikestore.monitor._stored.StoredRecords`'s
public methods only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from spikestore.errors import RecordIndexError
from spikestore.monitor._records import same
from spikestore.monitor._stored import StoredRecords

__all__ = ["RecordsView"]

#: Views up to this many records print in full; longer ones are summarised.
_REPR_RECORDS = 20


class RecordsView(Sequence[Any]):
    """Lazy, read-only list of a store-backed monitor's records.

    What ``m.records`` (all layers, in recording order) and ``m["layer"]``
    (one layer) return when the monitor has a store; not made by users.
    Items are read back from the store (flushing first when needed) and are
    equal to what SpikingJelly's in-memory monitor would hold (CPU tensors).
    ``clear()`` forgets the monitor's records; data on disk stays.

    Parameters
    ----------
    records
        The monitor's records.
    layer
        Show only this layer's records; ``None`` shows all.
    """

    def __init__(self, records: StoredRecords, layer: str | None = None) -> None:
        self._records = records
        self._layer = layer

    def __len__(self) -> int:
        if self._layer is None:
            return len(self._records)
        return self._records.layer_len(self._layer)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise RecordIndexError(f"record {i} out of range ({n} records)")
        layer, k = self._records.layer_of(j) if self._layer is None else (self._layer, j)
        return self._records.read(layer, k)

    def __iter__(self) -> Iterator[Any]:
        for j in range(len(self)):
            yield self[j]

    def clear(self) -> None:
        """Forget the monitor's records, as ``clear_recorded_data()`` does (nothing on disk is deleted)."""
        self._records.clear()

    def __repr__(self) -> str:
        # Printed like the list SpikingJelly keeps (the tutorial prints it),
        # but a long view is summarised instead of read whole from disk.
        n = len(self)
        if n <= _REPR_RECORDS:
            return repr(list(self))
        head = ", ".join(repr(self[i]) for i in range(2))
        return f"[{head}, ... {n - 2} more records in {self._records.store.path}]"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, tuple, RecordsView)) or len(other) != len(self):
            return False
        return all(same(a, b) for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]
