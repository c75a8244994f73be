"""Export to a self-contained HDF5 file, readable with h5py alone (or MATLAB).

Layout: one group per stream, ``/<quantity>/<layer>`` with the layer name
escaped as in the store (``docs/format.md`` §1.1); its attributes hold the
unescaped ``stream``, ``quantity``, ``layer``, ``dtype`` and the monitor's
``selection`` as JSON. Inside:

``seg000000``...   records ``[n, *shape]``, **unpacked**, original dtype
                   (bfloat16 as float32); one dataset per exported segment
``step``, ``call``, ``time``, ``segment``   one entry per exported record

Datasets are chunked and gzip-compressed (the filter every HDF5 build has).
The file is written under a temporary name and replaces ``out`` only once
complete (:func:`spikestore._files.replacing`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from spikestore._files import replacing
from spikestore._format import dtypes, stream_node
from spikestore._read.run import Run
from spikestore.errors import InvalidArgumentError, MissingDependencyError
from spikestore.export._common import Job, Progress, export_job, iter_records, selected_counts, step_mask

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
    opts = {"compression": compression, "shuffle": compression is not None}
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
    for key in job.keys:
        s = run[key]
        g = f.create_group(stream_node(key))
        g.attrs.update({"stream": key, "quantity": s.quantity, "layer": s.layer,
                        "selection": json.dumps(s.selection)})
        live = [(seg, n) for seg, n in zip(s.segments, selected_counts(s, rng), strict=True) if n]
        datasets, filled = {}, {}
        for number, (seg, n) in enumerate(live):
            dtype = dtypes.export_dtype(seg.doc["dtype"])
            chunk_rows = max(1, min(n, (1 << 20) // max(1, dtype.itemsize * seg.values_per_record)))
            ds = g.create_dataset(f"seg{number:06d}", shape=(n, *seg.shape), dtype=dtype,
                                  chunks=(chunk_rows, *seg.shape) if all(seg.shape) else None,
                                  **(opts if all(seg.shape) else {}))
            ds.attrs["dtype"] = seg.doc["dtype"]
            datasets[id(seg)], filled[id(seg)] = ds, 0
        for block in iter_records(s, rng):
            k = filled[id(block.segment)]
            datasets[id(block.segment)][k:k + len(block.values)] = block.values
            filled[id(block.segment)] = k + len(block.values)
            job.advance(len(block.values))
        keep = step_mask(s.steps, rng)
        g.create_dataset("step", data=s.steps[keep])
        g.create_dataset("call", data=s.calls[keep])
        g.create_dataset("time", data=s.times[keep])
        segno = np.full(len(s), -1, np.int32)
        for number, (seg, _) in enumerate(live):
            segno[seg.start:seg.stop] = number
        g.create_dataset("segment", data=segno[keep])
