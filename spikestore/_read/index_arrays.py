"""The per-record index arrays of a stream view: ``index(name)``, ``steps``, ``calls``, ``times``.

One rule for a stream of one store (:class:`~spikestore._read.stream.Stream`)
and for a stream merged over ranks
(:class:`~spikestore._read.ranked.RankedStream`): which names exist, that an
array is read once, kept, and handed out read-only. Each view says only how
to load one array (:meth:`IndexArrays._load_index`).
"""

from __future__ import annotations

import numpy as np

from spikestore._format import INDEX_ARRAYS
from spikestore.errors import InvalidArgumentError

__all__ = ["IndexArrays"]


class IndexArrays:
    """Mixin: index arrays loaded on first use into ``self._index`` (which the view empties to reload)."""

    _index: dict[str, np.ndarray]

    def _load_index(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def index(self, name: str) -> np.ndarray:
        """The index array ``name`` (``"step"``, ``"call"`` or ``"time"``): one entry per record, read-only.

        Read on first use and kept until :meth:`Run.refresh <spikestore.Run.refresh>`.
        """
        if name not in INDEX_ARRAYS:
            raise InvalidArgumentError(f"index must be one of {', '.join(INDEX_ARRAYS)}, not {name!r}")
        arr = self._index.get(name)
        if arr is None:
            arr = self._load_index(name)
            arr.setflags(write=False)
            self._index[name] = arr
        return arr

    @property
    def steps(self) -> np.ndarray:
        """Step of each record (``int64``)."""
        return self.index("step")

    @property
    def calls(self) -> np.ndarray:
        """Order of each record within its step on its rank (``int32``; single-step mode gives 0..T-1)."""
        return self.index("call")

    @property
    def times(self) -> np.ndarray:
        """Wall-clock time (Unix seconds) at which each record was captured."""
        return self.index("time")
