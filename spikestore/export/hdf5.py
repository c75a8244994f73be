"""Export to a self-contained HDF5 file, readable with h5py alone (or MATLAB).

Layout: one group per stream, ``/<quantity>/<layer>`` with the layer name
escaped as in the store (``docs/format.md`` §1.1); its attributes hold the
unescaped ``stream``, ``quantity``, ``layer``, ``dtype`` and the monitor's
``selection`` as JSON. Inside:

``seg000000``...   records ``[n, *shape]``, **unpacked**, original dtype
                   (bfloat16 as float32); one dataset per exported segment
``step``, ``call``, ``time``, ``segment``   one entry per exported record

A run recorded by several ranks (``docs/format.md`` §1.2) exports every
rank's records, rank by rank, each rank's in its record order (sort by
``step``, ``rank``, ``call`` for the record order of ``run[key]``), and adds

``rank``           the rank that recorded each exported record, beside ``step``

and the attributes ``ranks`` (the stream's group: the ranks that recorded
it; the root: ``spikestore_ranks``, the run's ranks). Its ranks' records of
one shape and dtype share one ``seg...`` dataset (``segment`` says which
holds each record), so ranks that recorded the same shapes give one
dataset. A one-process store's file has no ``rank`` dataset and no
``ranks`` attributes.

Datasets are chunked and gzip-compressed (the filter every HDF5 build has).
The file is written under a temporary name and replaces ``out`` only once
complete (:func:`spikestore._atomic_files.replacing`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from spikestore._atomic_files import replacing
from spikestore._format import dtypes, stream_node
from spikestore._read.run import Run
from spikestore.errors import InvalidArgumentError, MissingDependencyError
from spikestore.export._common import Job, Progress, export_job, iter_records, select_records

__all__ = ["to_hdf5"]


def to_hdf5(store: Run | str | os.PathLike[str], out: str | os.PathLike[str], *,
            streams: list[str] | None = None, steps: str | tuple[int | None, int | None] | None = None,
            progress: Progress | None = None, overwrite: bool = False,
            compression: str | None = "gzip") -> Path:
    """Write the selected streams and steps to an HDF5 file, chunk by chunk."""
    try:
        import h5py
    except ImportError:
        raise MissingDependencyError("HDF5 export needs h5py: pip install 'spikestore[hdf5]'") from None
    if compression not in (None, "gzip", "lzf"):
        raise InvalidArgumentError(f"compression must be None, 'gzip' or 'lzf', not {compression!r}")
    opts: dict[str, Any] = {"compression": compression, "shuffle": compression is not None}
    if compression == "gzip":
        opts["compression_opts"] = 1
    with export_job(store, out, streams=streams, steps=steps, progress=progress, overwrite=overwrite) as job:
        with replacing(job.out) as tmp, h5py.File(tmp, "w") as f:
            _write_file(job, f, opts)
        return job.out


def _write_file(job: Job, f: Any, opts: dict[str, Any]) -> None:
    """Every selected stream into the open file ``f``, one group each."""
    run, rng = job.run, job.steps
    f.attrs["spikestore_source"] = str(run.path)
    f.attrs["spikestore_metadata"] = json.dumps(run.metadata)
    f.attrs["spikestore_format_version"] = run.doc["format_version"]
    if job.ranked:
        f.attrs["spikestore_ranks"] = np.asarray(run.ranks, np.int64)
    for key in job.keys:
        s = run[key]
        g = f.create_group(stream_node(key))
        g.attrs.update({"stream": key, "quantity": s.quantity, "layer": s.layer,
                        "selection": json.dumps(s.selection)})
        if job.ranked:
            g.attrs["ranks"] = np.unique(np.asarray(s.ranks, np.int64))
        sel = select_records(s, rng, job.ranked)
        datasets, filled = {}, {}
        for number, piece in enumerate(sel.pieces):
            dtype, shape, n = dtypes.export_dtype(piece.dtype), piece.shape, piece.count
            chunk_rows = max(1, min(n, (1 << 20) // max(1, dtype.itemsize * int(np.prod(shape, dtype=np.int64)))))
            ds = g.create_dataset(f"seg{number:06d}", shape=(n, *shape), dtype=dtype,
                                  chunks=(chunk_rows, *shape) if all(shape) else None,
                                  **(opts if all(shape) else {}))
            ds.attrs["dtype"] = piece.dtype
            filled[number] = 0
            for seg in piece.segments:
                datasets[id(seg)] = (ds, number)
        for block in iter_records(s, rng):  # every rank in turn: each piece fills in its own order
            ds, number = datasets[id(block.segment)]
            k = filled[number]
            ds[k:k + len(block.values)] = block.values
            filled[number] = k + len(block.values)
            job.advance(len(block.values))
        g.create_dataset("step", data=sel.steps)
        g.create_dataset("call", data=sel.calls)
        if job.ranked:
            g.create_dataset("rank", data=sel.ranks)
        g.create_dataset("time", data=sel.times)
        g.create_dataset("segment", data=sel.piece)
