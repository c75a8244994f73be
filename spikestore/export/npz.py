"""Export to NPZ: one ``.npy`` member per stream segment, streamed chunk by chunk.

Members (load with ``np.load(path, allow_pickle=False)``):

``<stream>``            records ``[n, *shape]`` in their original dtype (bfloat16
                        as float32); a stream with several segments (shape
                        changes) has ``<stream>@<k>`` for its ``k``-th exported
                        segment instead
``<stream>.steps``      step of each exported record (int64), in order
``<stream>.calls``      order within the step (int32)
``<stream>.segment``    segment number of each record (only with several segments)

The file is written under a temporary name and replaces ``out`` only once
complete (:func:`spikestore._files.replacing`).
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from spikestore._files import replacing
from spikestore._format import dtypes
from spikestore._read.run import Run
from spikestore.export._common import Job, Progress, export_job, iter_records, selected_counts, step_mask

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
    """The members of one stream: its records (one member per exported segment), then its index."""
    s, rng = job.run[key], job.steps
    counts = dict(zip((id(seg) for seg in s.segments), selected_counts(s, rng), strict=True))
    live = [seg for seg in s.segments if counts[id(seg)]]
    numbers = {id(seg): i for i, seg in enumerate(live)}
    with contextlib.ExitStack() as member:
        current = None
        f: IO[bytes] | None = None
        for block in iter_records(s, rng):
            seg = block.segment
            if seg is not current:
                member.close()
                name = f"{key}@{numbers[id(seg)]}" if len(live) > 1 else key
                f = member.enter_context(_member(zf, name, dtypes.export_dtype(seg.doc["dtype"]),
                                                 (counts[id(seg)], *seg.shape)))
                current = seg
            assert f is not None
            f.write(np.ascontiguousarray(block.values).tobytes())
            job.advance(len(block.values))
    keep = step_mask(s.steps, rng)
    _write_array(zf, key + ".steps", s.steps[keep])
    _write_array(zf, key + ".calls", s.calls[keep])
    if len(live) > 1:
        segno = np.full(len(s), -1, np.int32)
        for seg in live:
            segno[seg.start:seg.stop] = numbers[id(seg)]
        _write_array(zf, key + ".segment", segno[keep])
