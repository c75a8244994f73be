"""Export to NWB (Neurodata Without Borders) with pynwb.

Mapping (decided once, used everywhere):

* **Spike streams** (bit-packed records) become the file's ``Units`` table.
  One unit per recorded neuron *and batch sample* of each layer: batch
  samples are independent inputs seen in parallel, not trials in sequence,
  so they are separate units. Columns ``layer``, ``quantity``, ``batch``,
  ``neuron`` (flattened index over the record's neuron axes). The index
  columns (``batch``, ``neuron``, ``rank``) are stored in the smallest
  unsigned integer type that holds their largest value (``uint8`` up to
  255): compact, and not mistaken for yes/no flags by ``nwbinspector``.
* **Spike times**: a record of step ``s`` covers ``T`` time bins (the T axis
  of a multi-step record; in single-step mode the calls of a step, ``T`` =
  the largest call + 1). Bin ``t`` of step ``s`` is at
  ``(s * T + t) * dt`` seconds, ``dt`` = 1 ms unless given; the table's
  ``resolution`` is ``dt``, the smallest difference two spike times can have.
* **Other streams** (voltages, inputs, gradients, norms) become
  ``TimeSeries`` in the processing module ``misc`` (the NWB module for what
  no acquisition modality covers: a simulated network's state), named
  ``<quantity>.<escaped layer>`` (``@k`` appended per segment when the shape
  changed). Time runs along the first axis: a multi-step record ``[T, N, ...]``
  gives ``T`` rows stamped ``(s * T + t) * dt``; other records give one row
  stamped like their first bin. Rows evenly spaced in time (every step
  recorded) are written as ``starting_time`` and ``rate``, others with
  explicit ``timestamps``; ``TimeSeries.get_timestamps()`` gives the times
  either way.
* **A run recorded by several ranks** (``docs/format.md`` §1.2): every
  rank's records are exported. Units are per rank too (each rank saw its
  own samples): the ``Units`` table gets a ``rank`` column, units ordered
  by stream, then rank, then batch sample and neuron. Other streams get one
  ``TimeSeries`` per rank, named ``<quantity>.<escaped layer> rank <r>``
  (``<quantity>.<escaped layer>@k rank <r>`` per segment), its description
  saying the rank: one series for all ranks would not do, as a series'
  timestamps must increase and the ranks record the same steps. ``T`` of
  single-step records is the largest over the ranks, so all ranks' spike
  times share one clock. A one-process store's file has no ``rank`` column
  and the series names above.
* **Session and subject**: the store's creation time is the
  ``session_start_time``, its run metadata goes to ``notes`` (JSON). The
  network is the NWB ``Subject``: ``subject_id`` the store's name,
  ``species`` NCBI's "synthetic construct"
  (:data:`~spikestore.export._nwb_metadata.SYNTHETIC_SPECIES`), ``sex`` "U",
  ``date_of_birth`` the store's creation time. The user's ``session`` and
  ``subject`` fields replace these, checked against the forms the DANDI
  archive requires (:mod:`spikestore.export._nwb_metadata`).

Everything streams: float series record by record through hdmf's
``DataChunkIterator``; spike times in two passes through a temporary
disk-backed array next to ``out`` (the Units table is ordered by unit,
the store by time). The file is written under a temporary name and replaces
``out`` only once complete (:func:`spikestore._atomic_files.replacing`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from spikestore._atomic_files import replacing
from spikestore._format import dtypes, escape_layer
from spikestore._format.layout import RecordLayout
from spikestore._read.run import Run
from spikestore._read.segment import Segment
from spikestore._read.stream import Stream
from spikestore.errors import InvalidArgumentError, MissingDependencyError
from spikestore.export._common import (
    Job,
    Progress,
    export_job,
    is_spike_stream,
    iter_records,
    selected_counts,
    spike_events,
    step_mask,
)
from spikestore.export._nwb_metadata import check_session, check_subject, session_defaults, subject_defaults

__all__ = ["to_nwb"]

# The processing module that holds the TimeSeries of the streams that are not spikes.
_SERIES_MODULE = "misc"


class _SpikeUnits(NamedTuple):
    """The units of one rank's spike stream: ``n_batch * n_neuron`` of them from unit ``base`` on."""

    stream: Stream
    rank: int
    segments: list[Segment]  # the rank's segments of the stream
    T: int
    base: int
    n_batch: int
    n_neuron: int


def _by_rank(stream: Stream) -> dict[int, list[Segment]]:
    """The stream's segments by the rank that stored them, rank by rank."""
    out: dict[int, list[Segment]] = {}
    for seg in stream.segments:
        out.setdefault(seg.rank, []).append(seg)
    return out


def _bins_per_step(stream: Stream) -> int:
    """Time bins per step: the largest over the ranks, so every rank's records share one clock."""
    bins = []
    calls = stream.calls
    for segs in _by_rank(stream).values():
        shape = segs[0].shape
        if stream.layout.kind(shape) == "m":
            bins.append(int(shape[0]))
        else:
            bins.append(int(max(calls[stream.record_positions(seg)].max() for seg in segs)) + 1)
    return max(bins, default=1)


def to_nwb(store: Run | str | os.PathLike[str], out: str | os.PathLike[str], *,
           streams: list[str] | None = None, steps: str | tuple[int | None, int | None] | None = None,
           dt: float = 1e-3, progress: Progress | None = None, overwrite: bool = False,
           session: Mapping[str, Any] | None = None, subject: Mapping[str, Any] | None = None) -> Path:
    """Write the selected streams and steps of a store to an NWB file.

    Parameters
    ----------
    store, out
        The store (a path, a URL or an open run) and the ``.nwb`` file to write.
    streams, steps, progress, overwrite
        As for every exporter (:mod:`spikestore.export`).
    dt
        Seconds per time bin: spike times are ``(step * T + t) * dt``, and ``dt``
        is the ``Units`` table's ``resolution``.
    session
        ``NWBFile`` fields that replace the store's defaults, e.g.
        ``{"session_description": ..., "session_id": ..., "experimenter": ["Doe, Jane"],
        "institution": ...}`` (``docs/cli.md`` lists them). Times are
        timezone-aware datetimes or ISO 8601 text.
    subject
        ``Subject`` fields that replace the defaults (the network: species NCBI's
        "synthetic construct", sex "U"), e.g. ``{"subject_id": ..., "species": ...,
        "sex": ..., "age": "P90D"}``; species a Latin binomial or an NCBI taxonomy link,
        sex ``M``/``F``/``O``/``U``, age an ISO 8601 duration, as the DANDI archive requires.
        Giving ``age`` without ``date_of_birth`` drops the default date of birth.

    Raises
    ------
    InvalidArgumentError
        A ``dt`` that is not positive, or a session or subject field that is
        unknown or not in the form NWB and DANDI take (the message names it and
        gives an example), before anything is read or written.
    """
    try:
        from hdmf.data_utils import DataChunkIterator
        from pynwb import NWBHDF5IO, NWBFile, TimeSeries
        from pynwb.file import Subject
    except ImportError:
        raise MissingDependencyError("NWB export needs pynwb: pip install 'spikestore[nwb]'") from None
    if not dt > 0:
        raise InvalidArgumentError(f"dt must be a positive number of seconds, not {dt!r}")
    user_session, user_subject = check_session(session), check_subject(subject)
    with export_job(store, out, streams=streams, steps=steps, progress=progress, overwrite=overwrite) as job:
        scratch = job.out.with_name(job.out.stem + ".spike-times.tmp")
        try:
            return _write_nwb(job, scratch, dt, user_session, user_subject, DataChunkIterator, NWBHDF5IO, NWBFile,
                              TimeSeries, Subject)
        finally:
            scratch.unlink(missing_ok=True)


def _write_nwb(job: Job, scratch: Path, dt: float, session: dict[str, Any], subject: dict[str, Any],
               DataChunkIterator: Any, NWBHDF5IO: Any, NWBFile: Any, TimeSeries: Any, Subject: Any) -> Path:
    run, rng, out, keys = job.run, job.steps, job.out, job.keys
    on_rows = job.advance
    created = datetime.fromisoformat(run.doc["created"])
    subject_fields = subject_defaults(run.path.stem, created)
    if "age" in subject and "date_of_birth" not in subject:
        del subject_fields["date_of_birth"]  # the user's age, not an age of zero at the session's start
    session_fields = {"identifier": str(uuid.uuid4()), **session_defaults(run.path.name, created, run.metadata),
                      **session}
    nwb = NWBFile(**session_fields, notes=json.dumps(run.metadata, sort_keys=True),
                  source_script_file_name="spikestore",
                  subject=Subject(**{**subject_fields, **subject}))
    module = None

    spike_streams: list[_SpikeUnits] = []
    n_units = 0
    for key in keys:
        s = run[key]
        if not len(s):
            continue
        T = _bins_per_step(s)
        parts = _by_rank(s)  # (rank by rank)
        if is_spike_stream(s):
            for rank, segs in parts.items():
                shapes = {seg.shape for seg in segs}
                kind = s.layout.kind(segs[0].shape)
                axis = RecordLayout(kind).batch_axis  # (the batch axis of the kind's layout)
                n_batch = 1 if axis is None else max(shp[axis] for shp in shapes)
                n_neuron = max(int(np.prod(shp[0 if axis is None else axis + 1:])) for shp in shapes)
                spike_streams.append(_SpikeUnits(s, rank, segs, T, n_units, n_batch, n_neuron))
                n_units += n_batch * n_neuron
            continue
        if module is None:
            module = nwb.create_processing_module(
                _SERIES_MODULE, "Non-spike streams of a spiking network recorded by spikestore monitors "
                               "(voltages, inputs, gradients)")
        for rank, segs in parts.items():
            counts = selected_counts(s, rng, segs)
            live = [seg for seg, n in zip(segs, counts, strict=True) if n]
            groups = _series_groups(live)
            for number, group in enumerate(groups):
                _add_series(module, s, key, group, number if len(groups) > 1 else None,
                            T, dt, rng, DataChunkIterator, TimeSeries, on_rows, rank if job.ranked else None)
    if n_units:
        nwb.units = _units_table(spike_streams, n_units, rng, dt, scratch, on_rows, job.ranked)
    with replacing(out, keep_suffix=True) as tmp, NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwb)
    return out


def _unit_events(s: Stream, segments: list[Segment], T: int, base: int, n_neuron: int,
                 rng: tuple[int | None, int | None]) -> Any:
    """(unit ids, spike times in bins) of each block of ``segments`` of a spike stream, in time order."""
    for block in iter_records(s, rng, segments):
        ev = spike_events(block, s.layout.kind(block.segment.shape))
        yield block, base + ev["batch"] * n_neuron + ev["neuron"], block.steps[ev["record"]] * T + ev["t"]


def _units_table(spike_streams: list[_SpikeUnits], n_units: int, rng: tuple[int | None, int | None],
                 dt: float, scratch: Path, on_rows: Any, ranked: bool) -> Any:
    """The Units table, built in two passes with the spike times on disk.

    Pass 1 counts spikes per unit; pass 2 writes each spike's time at its
    unit's next free slot in a disk-backed array; the table's ragged
    ``spike_times`` column then streams from that array. Memory stays at a
    few integers per unit plus one decoded chunk, however many spikes.
    ``ranked``: add the ``rank`` column (a run recorded by several ranks).
    """
    from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
    from pynwb.misc import Units

    counts = np.zeros(n_units, dtype=np.int64)
    for s, _, segs, T, base, _, n_neuron in spike_streams:
        for _, ids, _ in _unit_events(s, segs, T, base, n_neuron, rng):
            counts += np.bincount(ids, minlength=n_units)
    ends = np.cumsum(counts)
    total = int(ends[-1]) if n_units else 0
    times = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float64, shape=(max(total, 1),))
    cursor = ends - counts
    for s, _, segs, T, base, _, n_neuron in spike_streams:
        for block, ids, bins in _unit_events(s, segs, T, base, n_neuron, rng):
            order = np.argsort(ids, kind="stable")  # per unit, events stay in time order
            ids, bins = ids[order], bins[order]
            uniq, first, cnt = np.unique(ids, return_index=True, return_counts=True)
            pos = cursor[ids] + (np.arange(len(ids)) - np.repeat(first, cnt))
            times[pos] = bins * dt
            cursor[uniq] += cnt
            on_rows(len(block.values))
    times.flush()
    layer, quantity, rank, batch, neuron = [], [], [], [], []
    for s, r, _, _, _, n_batch, n_neuron in spike_streams:
        b, n = np.divmod(np.arange(n_batch * n_neuron), n_neuron)
        layer += [s.layer] * len(b)
        quantity += [s.quantity] * len(b)
        rank.append(np.full(len(b), r, np.int64))
        batch.append(b)
        neuron.append(n)
    # A file-backed memmap: h5py copies it page by page, and those pages are
    # page cache the kernel can drop, not the exporter's own memory.
    spike_times = VectorData(name="spike_times", description="Spike times of each unit, in seconds",
                             data=times[:total])
    columns = [
        spike_times,
        VectorIndex(name="spike_times_index", data=ends, target=spike_times),
        VectorData(name="layer", description="Name of the layer in nn.Module.named_modules()", data=layer),
        VectorData(name="quantity", description="spikestore quantity the spikes come from (e.g. output)",
                   data=quantity),
        *([VectorData(name="rank", description="Rank of the process group that recorded the unit's spikes "
                                               "(each rank trains on its own samples)",
                      data=_index_column(np.concatenate(rank)))] if ranked else []),
        VectorData(name="batch", description="Index of the sample within the training batch",
                   data=_index_column(np.concatenate(batch))),
        VectorData(name="neuron", description="Flattened index of the neuron within the layer's record",
                   data=_index_column(np.concatenate(neuron))),
    ]
    return Units(name="units", description="Spiking neurons recorded by spikestore monitors",
                 resolution=dt,  # spike times are whole time bins
                 id=ElementIdentifiers(name="id", data=np.arange(n_units)), columns=columns,
                 colnames=("spike_times", "layer", "quantity", *(("rank",) if ranked else ()), "batch", "neuron"))


def _index_column(values: np.ndarray) -> np.ndarray:
    """Non-negative indices in the smallest unsigned integer type that holds them.

    A wider type whose first rows hold only 0 and 1 (two batch samples, two
    ranks) reads to ``nwbinspector`` as a yes/no flag stored wastefully.
    """
    top = int(values.max()) if len(values) else 0
    return values.astype(np.min_scalar_type(top))


def _series_groups(segments: list[Segment]) -> list[list[Segment]]:
    """Segments that can share one TimeSeries.

    Float segments whose shapes differ only in size (the smaller last batch
    of an epoch) are padded with NaN to the largest shape and kept together:
    one series per stream reads better than a series per epoch end.
    """
    if segments and all(dtypes.export_dtype(seg.doc["dtype"]).kind == "f" for seg in segments) \
            and len({len(seg.shape) for seg in segments}) == 1:
        return [segments]
    return [[seg] for seg in segments]


def _add_series(module: Any, s: Stream, key: str, group: list[Segment], number: int | None, T: int, dt: float,
                rng: tuple[int | None, int | None], DataChunkIterator: Any, TimeSeries: Any,
                on_rows: Any, rank: int | None = None) -> None:
    """One TimeSeries holding the records of ``group`` (segments of stream ``s``, one rank's).

    ``rank``: the rank that recorded them, in a run of several ranks (named
    and described in the series), else ``None``.
    """
    shape = tuple(int(max(dims)) for dims in zip(*(seg.shape for seg in group), strict=True)) if group[0].shape else ()
    padded = any(seg.shape != shape for seg in group)
    kind = s.layout.kind(shape) if shape else "n"
    bins = kind == "m"  # a multi-step record is T rows of the series
    dtype = np.result_type(*(dtypes.export_dtype(seg.doc["dtype"]) for seg in group))

    def rows() -> Any:  # one record at a time: bounded memory
        for block in iter_records(s, rng, group):
            values = block.values
            if padded and values.shape[1:] != shape:
                full = np.full((len(values), *shape), np.nan, dtype=dtype)
                full[(slice(None), *(slice(0, d) for d in values.shape[1:]))] = values
                values = full
            for record in values:
                yield from (record if bins else (record,))
            on_rows(len(values))

    steps_sel = np.concatenate([_segment_index(s, seg, rng)[0] for seg in group])
    calls_sel = np.concatenate([_segment_index(s, seg, rng)[1] for seg in group])
    order = np.argsort(np.concatenate([np.arange(seg.start, seg.stop)[step_mask(s.steps[s.record_positions(seg)], rng)]
                                       for seg in group]), kind="stable")
    if bins:
        ticks = (steps_sel[:, None] * T + np.arange(shape[0])).reshape(-1)
        row_shape = shape[1:]
    elif kind == "s":
        ticks = steps_sel * T + calls_sel
        row_shape = shape
    else:
        ticks = steps_sel * T
        row_shape = shape
    assert np.all(order == np.arange(len(order)))  # segments are consecutive in record order
    name = f"{s.quantity}.{escape_layer(s.layer)}" + ("" if number is None else f"@{number}") \
        + ("" if rank is None else f" rank {rank}")
    data = DataChunkIterator(data=rows(), maxshape=(None, *row_shape), dtype=dtype,
                             buffer_size=max(1, (8 << 20) // max(1, int(np.prod(row_shape)) * 8)))
    note = " Smaller records (a short last batch) are padded with NaN." if padded else ""
    if rank is not None:
        note += f" Recorded by rank {rank} of the process group (each rank has its own series)."
    module.add(TimeSeries(
        name=name, data=data, unit="a.u.", **_timing(ticks, dt),
        description=(f"spikestore stream {key!r}: {s.quantity} of layer {s.layer!r}, record shape "
                     f"{list(shape)} ({'one row per time bin' if bins else 'one row per record'}), "
                     f"dtype {group[0].doc['dtype']}; selection {json.dumps(s.selection)}.{note}")))


def _timing(ticks: np.ndarray, dt: float) -> dict[str, Any]:
    """A series' times from its rows' time bins: ``starting_time`` and ``rate`` when the bins are evenly
    spaced (checked on the integer bins, so exactly), else explicit ``timestamps``."""
    gaps = np.diff(ticks)
    if len(gaps) and gaps[0] > 0 and np.all(gaps == gaps[0]):
        return {"starting_time": float(ticks[0] * dt), "rate": 1.0 / (float(gaps[0]) * dt)}
    return {"timestamps": ticks * dt}


def _segment_index(stream: Stream, seg: Segment, rng: tuple[int | None, int | None]) -> tuple[np.ndarray, np.ndarray]:
    """Steps and calls of the selected records of one segment (for their time bins)."""
    at = stream.record_positions(seg)
    steps = stream.steps[at]
    keep = step_mask(steps, rng)
    return steps[keep].astype(np.int64), stream.calls[at][keep].astype(np.int64)
