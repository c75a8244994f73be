"""Export to Parquet for pandas, polars and DuckDB.

``OUT`` is a directory of Parquet files:

``spikes.parquet``          one row per spike event of every spike (bit-packed)
                            stream: ``quantity``, ``layer``, ``step`` (int64),
                            ``call`` (int32), ``t`` (time bin: the T axis in
                            multi-step records, the call number in single-step
                            ones), ``batch`` (sample), ``neuron`` (flattened index
                            over the record's remaining axes)
``values-<dtype>.parquet``  one row per record of every other stream whose
                            values have that dtype (``values-float32.parquet``,
                            ``values-float64.parquet``, ...): ``quantity``,
                            ``layer``, ``step``, ``call``, ``shape`` (list<int64>),
                            ``values`` (list of the record's values, C order; a
                            complex dtype has ``real`` and ``imag`` instead).
                            One file per dtype, so no value is cast to another
                            stream's type; bfloat16 records are exported as
                            float32, which holds them exactly.

A run recorded by several ranks (``docs/format.md`` §1.2) exports every
rank's records, and both tables then have a ``rank`` column (int32, after
``layer``) saying which rank recorded each row; rows come rank by rank, each
rank's in its record order (sort by ``step``, ``rank``, ``call`` for the
record order of ``run[key]``). A one-process store's tables have no ``rank``
column.

Both are written in row groups of one decoded chunk each, so memory stays
bounded by a chunk whatever the store's size. The directory is written under
a temporary name and replaces ``out`` only once complete
(:func:`spikestore._atomic_files.replacing`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from spikestore._atomic_files import replacing
from spikestore._read.run import Run
from spikestore._read.stream import Stream
from spikestore.errors import MissingDependencyError
from spikestore.export._common import (
    Job,
    Progress,
    Records,
    export_job,
    is_spike_stream,
    iter_records,
    spike_events,
)

__all__ = ["to_parquet"]


def to_parquet(store: Run | str | os.PathLike[str], out: str | os.PathLike[str], *,
               streams: list[str] | None = None, steps: str | tuple[int | None, int | None] | None = None,
               progress: Progress | None = None, overwrite: bool = False) -> Path:
    """Write spike events and other records as Parquet tables in directory ``out``."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # (checked here, used by _write_tables)
    except ImportError:
        raise MissingDependencyError("Parquet export needs pyarrow: pip install 'spikestore[parquet]'") from None
    with export_job(store, out, streams=streams, steps=steps, progress=progress, overwrite=overwrite) as job:
        spike_schema = pa.schema([("quantity", pa.dictionary(pa.int32(), pa.string())),
                                  ("layer", pa.dictionary(pa.int32(), pa.string())),
                                  *([("rank", pa.int32())] if job.ranked else []),
                                  ("step", pa.int64()), ("call", pa.int32()), ("t", pa.int32()),
                                  ("batch", pa.int32()), ("neuron", pa.int64())])
        with replacing(job.out, folder=True) as tmp, contextlib.ExitStack() as writers:
            _write_tables(job, tmp, spike_schema, writers)
        return job.out


def _write_tables(job: Job, tmp: Path, spike_schema: Any, closing: contextlib.ExitStack) -> None:
    """One row group per decoded chunk: spike events, or records of other streams.

    Every rank's chunks in turn (:func:`iter_records`), each row labelled with
    its rank when the run has several. Each table's writer is closed by
    ``closing`` (before the folder is published).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    run, rng = job.run, job.steps
    writers: dict[str, Any] = {}
    for key in job.keys:
        s = run[key]
        spikes = is_spike_stream(s)
        for block in iter_records(s, rng):
            if spikes:
                ev = spike_events(block, block.stream.layout.kind(block.segment.shape))
                n = len(ev["record"])
                table = pa.table({
                    "quantity": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [s.quantity]),
                    "layer": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [s.layer]),
                    **({"rank": np.full(n, block.rank, np.int32)} if job.ranked else {}),
                    "step": block.steps[ev["record"]],
                    "call": block.calls[ev["record"]].astype(np.int32),
                    "t": ev["t"].astype(np.int32),
                    "batch": ev["batch"].astype(np.int32),
                    "neuron": ev["neuron"].astype(np.int64),
                }, schema=spike_schema)
                name = "spikes.parquet"
            else:
                table, name = _values_table(s, block, job.ranked)
            w = writers.get(name)
            if w is None:
                w = writers[name] = closing.enter_context(
                    pq.ParquetWriter(tmp / name, table.schema, compression="zstd"))
            w.write_table(table)
            job.advance(len(block.values))


def _values_table(s: Stream, block: Records, ranked: bool) -> tuple[Any, str]:
    """Records of a stream that is not spikes, as rows of the table of their dtype, and its file name.

    One table per value dtype (``values-float32.parquet``, ``values-float64.parquet``,
    ...), so no value is ever cast to another stream's type. Parquet has no
    complex type: complex records keep their real and imaginary parts in two
    list columns, ``real`` and ``imag``. ``ranked``: add the ``rank`` column.
    """
    import pyarrow as pa

    k = len(block.values)
    flat = block.values.reshape(k, -1)
    offsets = np.arange(k + 1, dtype=np.int32) * flat.shape[1]

    def lists(v: np.ndarray) -> Any:
        return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(v).reshape(-1)))

    columns: dict[str, Any] = {
        "quantity": [s.quantity] * k, "layer": [s.layer] * k,
        **({"rank": np.full(k, block.rank, np.int32)} if ranked else {}),
        "step": block.steps, "call": block.calls.astype(np.int32),
        "shape": pa.array([list(block.segment.shape)] * k, type=pa.list_(pa.int64()))}
    if np.iscomplexobj(flat):
        columns |= {"real": lists(flat.real), "imag": lists(flat.imag)}
    else:
        columns["values"] = lists(flat)
    return pa.table(columns), f"values-{flat.dtype.name}.parquet"
