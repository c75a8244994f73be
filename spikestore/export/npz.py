"""Export to NPZ: one ``.npy`` member per stream segment, streamed chunk by chunk.

Members (load with ``np.load(path, allow_pickle=False)``; docs/cli.md shows a reader):

``<stream>``            records ``[n, *shape]``; a stream with several segments
                        (shape changes) has ``<stream>@<k>`` for its ``k``-th
                        exported segment instead. Spikes (a segment stored
                        with the ``bits`` encoding: only 0s and 1s) are
                        ``bool``; other records keep their dtype (bfloat16
                        as float32, which holds every bfloat16 exactly)
``<array>.dtype``       beside every records member ``<array>`` (``<stream>``
                        or ``<stream>@<k>``): the records' dtype as the store
                        reports it (``"float32"``, ``"bfloat16"``...), a 0-d
                        unicode array; ``z[a].astype(str(z[a + ".dtype"]))``
                        gives the store's values, dtype included
``<stream>.steps``      step of each exported record (int64), in order
``<stream>.calls``      order within the step (int32)
``<stream>.segment``    segment number of each record (only with several segments)

Spikes and the small members are deflated; other records are stored as
they are (see :func:`_member`).

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
import time
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from spikestore._atomic_files import replacing
from spikestore._format import dtypes
from spikestore._read.run import Run
from spikestore.export._common import Job, Piece, Progress, export_job, select_records

__all__ = ["to_npz"]


def _member(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], *,
            deflate: bool) -> IO[bytes]:
    """An ``.npy`` member to write ``shape`` values of ``dtype`` into, deflated (zlib's default level, 6) or not.

    Spikes are written as ``bool`` (one byte a value, in the records' own
    shape, so ``z[key]`` is the records as they are) and deflated: deflate
    brings a byte per value close to the bit per value the store holds. The
    file of the demo's spike streams is 1.47x the store's spike chunks, of
    a sparser CNN's 1.8x, and the spikes alone take at most 2.7x for
    densities from 0.05% to 50%. ``np.packbits`` before deflating would be
    smaller (1.0x to 1.9x) and faster, but every reader would have to
    unpack members whose shape is no longer the records'; ``bool`` keeps the
    members readable as they are, under the same keys, with the values of
    float records of 0s and 1s.
    Other records are stored as they are: deflate takes a sixth off float
    values (membrane potentials) at about 30 MB/s, several times slower
    than the rest of the export.
    """
    info = zipfile.ZipInfo(name + ".npy", date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    f = zf.open(info, mode="w", force_zip64=True)
    np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                              "fortran_order": False, "shape": shape})
    return f


def _write_array(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with _member(zf, name, arr.dtype, arr.shape, deflate=True) as f:
        f.write(np.ascontiguousarray(arr).tobytes())


def to_npz(store: Run | str | os.PathLike[str], out: str | os.PathLike[str], *,
           streams: list[str] | None = None, steps: str | tuple[int | None, int | None] | None = None,
           progress: Progress | None = None, overwrite: bool = False) -> Path:
    """Write the selected streams and steps of a store to an ``.npz`` file.

    Values are written as they are decoded, one chunk at a time, so a store
    larger than memory exports. Spikes are written as deflated ``bool``
    (a small fraction of their float32 size), other records as they are;
    every records member ``a`` has a member ``a.dtype`` naming the dtype
    the store reports, so ``z[a].astype(str(z[a + ".dtype"]))`` restores
    the values exactly (bfloat16, which numpy lacks, stays float32 unless
    cast with ``ml_dtypes.bfloat16``).
    """
    with export_job(store, out, streams=streams, steps=steps, progress=progress, overwrite=overwrite) as job:
        with replacing(job.out) as tmp, \
                zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for key in job.keys:
                _write_stream(job, zf, key)
        return job.out


def _is_spikes(piece: Piece) -> bool:
    """Whether every record of ``piece`` is stored as bits (0s and 1s only), so ``bool`` holds it exactly."""
    return all(seg.encoding == "bits" for seg in piece.segments)


def _write_stream(job: Job, zf: zipfile.ZipFile, key: str) -> None:
    """The members of one stream: its records (one member per exported piece), then its index.

    A zip member is written whole before the next starts, so each piece is
    walked on its own (every rank's segments of it in turn); each chunk is
    still read once.
    """
    sel = select_records(job.run[key], job.steps, job.ranked)
    for number, piece in enumerate(sel.pieces):
        name = f"{key}@{number}" if len(sel.pieces) > 1 else key
        spikes = _is_spikes(piece)
        dtype = np.dtype(bool) if spikes else dtypes.export_dtype(piece.dtype)
        with _member(zf, name, dtype, (piece.count, *piece.shape), deflate=spikes) as f:
            for block in piece.records(job.run[key], job.steps):
                values = block.values != 0 if spikes else block.values
                f.write(np.ascontiguousarray(values).tobytes())
                job.advance(len(block.values))
        _write_array(zf, name + ".dtype", np.array(piece.dtype))
    _write_array(zf, key + ".steps", sel.steps)
    _write_array(zf, key + ".calls", sel.calls)
    if job.ranked:
        _write_array(zf, key + ".ranks", sel.ranks)
    if len(sel.pieces) > 1:
        _write_array(zf, key + ".segment", sel.piece)
