"""Exporters for offline analysis: NWB, HDF5, Parquet, NPZ.

Every exporter reads the store chunk by chunk, takes ``streams`` (keys or
shell patterns such as ``"output/*"``) and ``steps`` (``"A:B"``, stop
exclusive), and calls ``progress(done_records, total_records)`` as it goes;
the command line supplies a progress bar. A run recorded by several ranks
exports every rank's records, each labelled with the rank that recorded it
(a ``rank`` column, array or dataset; see each exporter), and progress
counts every rank's records; a one-process store's export has no rank
label. Each writes to a temporary name and renames it at the end (:func:`spikestore._atomic_files.replacing`), so a
failed export leaves no half file under the final name and no temporary
behind, and an older output it was to replace stays as it was.

:func:`export` picks the format from the output's suffix when none is given
(:data:`SUFFIXES`, :func:`format_for`); the command line uses the same rule.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spikestore.errors import InvalidArgumentError
from spikestore.export.hdf5 import to_hdf5
from spikestore.export.npz import to_npz
from spikestore.export.nwb import to_nwb
from spikestore.export.parquet import to_parquet

if TYPE_CHECKING:
    from spikestore._read.run import Run

__all__ = ["FORMATS", "SUFFIXES", "export", "format_for", "to_hdf5", "to_npz", "to_nwb", "to_parquet"]

FORMATS = ("nwb", "hdf5", "parquet", "npz")

#: The output suffixes that name a format, so that ``export(store, "run.nwb")``
#: needs no ``format`` (a parquet export is a directory named ``*.parquet``).
SUFFIXES = {".nwb": "nwb", ".h5": "hdf5", ".hdf5": "hdf5", ".parquet": "parquet", ".npz": "npz"}


def format_for(out: str | os.PathLike[str]) -> str:
    """The export format that ``out``'s suffix names (:data:`SUFFIXES`, case-insensitive).

    Raises
    ------
    InvalidArgumentError
        For any other suffix: the message lists the suffixes understood and
        says to pass the format explicitly.
    """
    suffix = Path(out).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    known = ", ".join(f"{s} ({f})" for s, f in SUFFIXES.items())
    what = f"suffix {suffix!r}" if suffix else "no suffix"
    raise InvalidArgumentError(
        f"cannot tell the export format of {str(out)!r} from its {what}; name the output with one of "
        f"{known}, or give the format explicitly (format=... in Python, --format on the command line: "
        f"one of {', '.join(FORMATS)})")


def export(store: Run | str | os.PathLike[str], out: str | os.PathLike[str], format: str | None = None,
           **kwargs: Any) -> Path:
    """Export ``store`` (a path or an open run) to ``out`` in ``format``.

    ``format`` defaults to the one ``out``'s suffix names (:func:`format_for`:
    ``.nwb``, ``.h5``/``.hdf5``, ``.parquet``, ``.npz``); an explicit
    ``format`` wins over the suffix. Other keywords go to the exporter.
    """
    if format is None:
        format = format_for(out)
    funcs: dict[str, Callable[..., Path]] = {"nwb": to_nwb, "hdf5": to_hdf5, "parquet": to_parquet, "npz": to_npz}
    if format not in funcs:
        raise InvalidArgumentError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    return funcs[format](store, out, **kwargs)
