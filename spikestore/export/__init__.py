"""Exporters for offline analysis: NWB, HDF5, Parquet, NPZ.

Every exporter reads the store chunk by chunk, takes ``streams`` (keys or
shell patterns such as ``"output/*"``) and ``steps`` (``"A:B"``, stop
exclusive), and calls ``progress(done_records, total_records)`` as it goes;
the command line supplies a progress bar. Each writes to a temporary name
and renames it at the end (:func:`spikestore._files.replacing`), so a
failed export leaves no half file under the final name and no temporary
behind, and an older output it was to replace stays as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spikestore.errors import InvalidArgumentError

__all__ = ["FORMATS", "export", "to_hdf5", "to_npz", "to_nwb", "to_parquet"]

FORMATS = ("nwb", "hdf5", "parquet", "npz")


def to_nwb(*args: Any, **kwargs: Any) -> Path:
    """See :func:`spikestore.export.nwb.to_nwb`."""
    from spikestore.export.nwb import to_nwb as f

    return f(*args, **kwargs)


def to_hdf5(*args: Any, **kwargs: Any) -> Path:
    """See :func:`spikestore.export.hdf5.to_hdf5`."""
    from spikestore.export.hdf5 import to_hdf5 as f

    return f(*args, **kwargs)


def to_parquet(*args: Any, **kwargs: Any) -> Path:
    """See :func:`spikestore.export.parquet.to_parquet`."""
    from spikestore.export.parquet import to_parquet as f

    return f(*args, **kwargs)


def to_npz(*args: Any, **kwargs: Any) -> Path:
    """See :func:`spikestore.export.npz.to_npz`."""
    from spikestore.export.npz import to_npz as f

    return f(*args, **kwargs)


def export(store: Any, out: str | os.PathLike[str], format: str, **kwargs: Any) -> Path:  # noqa: A002
    """Export ``store`` (a path or an open run) to ``out`` in ``format``."""
    funcs = {"nwb": to_nwb, "hdf5": to_hdf5, "parquet": to_parquet, "npz": to_npz}
    if format not in funcs:
        raise InvalidArgumentError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    return funcs[format](store, out, **kwargs)
