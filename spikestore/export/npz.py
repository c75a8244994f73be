"""Export to NPZ: one ``.npy`` member per stream segment, streamed chunk by chunk.

Members (load with ``np.load(path, allow_pickle=False)``):

``<stream>``            records ``[n, *shape]`` in their original dtype (bfloat16
                        as float32); a stream with several segments (shape
                        changes) has ``<stream>@<k>`` for its ``k``-th exported
                        segment instead
``<stream>.steps``      step of each exported record (int64), in order
``<stream>.calls``      order within the step (int32)
``<stream>.segment``    segment number of each record (only with several segments)

A run recorded by several ranks (``docs/format.md`` §1.2) exports every
rank's records, rank by rank, each rank's in its record order (sort by
steps, ranks, calls for the record order of ``run[key]``), and adds

``<stream>.ranks``      the rank that recorded each exported record (int64)

Its ranks' records of one shape and dtype share one member (``<stream>``,
or ``<stream>@k`` when the shape or dtype changed, ``k`` in order of first
appearance, with ``<stream>.segment`` saying which member holds each
record), so ranks that recorded the same shapes give one array. A
one-process store's file has no ``.ranks`` member.

The file is written under a temporary name and replaces ``out`` only once
complete (:func:`spikestore._atomic_files.replacing`).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from spikestore._atomic_files import replacing
from spikestore._format import dtypes
from spikestore._read.run import Run
from spikestore.export._common import Job, Progress, export_job, select_records

__all__ = ["to_npz"]


def _member(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> IO[bytes]:
    f = zf.open(name + ".npy", mode="w", force_zip64=True)
    np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                              "fortran_order": False, "shape": shape})
    return f


def _write_array(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with _member(zf, name, arr.dtype, arr.shape) as f:
        f.write(np.ascontiguousarray(arr).tobytes())


def to_npz(store: Run | str | os.PathLike[str], out: str | os.PathLike[str], *,
           streams: list[str] | None = None, steps: str | tuple[int | None, int | None] | None = None,
           progress: Progress | None = None, overwrite: bool = False) -> Path:
    """Write the selected streams and steps of a store to an ``.npz`` file.

    Values are written as they are decoded, one chunk at a time, so a store
    larger than memory exports (the file itself is as large as the values).
    """
    with export_job(store, out, streams=streams, steps=steps, progress=progress, overwrite=overwrite) as job:
        with replacing(job.out) as tmp, \
                zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key in job.keys:
                _write_stream(job, zf, key)
        return job.out


def _write_stream(job: Job, zf: zipfile.ZipFile, key: str) -> None:
    """The members of one stream: its records (one member per exported piece), then its index.

    A zip member is written whole before the next starts, so each piece is
    walked on its own (every rank's segments of it in turn); each chunk is
    still read once.
    """
    sel = select_records(job.run[key], job.steps, job.ranked)
    for number, piece in enumerate(sel.pieces):
        name = f"{key}@{number}" if len(sel.pieces) > 1 else key
        with _member(zf, name, dtypes.export_dtype(piece.dtype), (piece.count, *piece.shape)) as f:
            for block in piece.records(job.run[key], job.steps):
                f.write(np.ascontiguousarray(block.values).tobytes())
                job.advance(len(block.values))
    _write_array(zf, key + ".steps", sel.steps)
    _write_array(zf, key + ".calls", sel.calls)
    if job.ranked:
        _write_array(zf, key + ".ranks", sel.ranks)
    if len(sel.pieces) > 1:
        _write_array(zf, key + ".segment", sel.piece)
