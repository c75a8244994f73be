"""Export to NWB (Neurodata Without Borders) with pynwb.

Mapping (decided once, used everywhere):

* **Spike streams** (bit-packed records) become the file's ``Units`` table.
  One unit per recorded neuron *and batch sample* of each layer: batch
  samples are independent inputs seen in parallel, not trials in sequence,
  so they are separate units. Columns ``layer``, ``quantity``, ``batch``,
  ``neuron`` (flattened index over the record's neuron axes).
* **Spike times**: a record of step ``s`` covers ``T`` time bins (the T axis
  of a multi-step record; in single-step mode the calls of a step, ``T`` =
  the largest call + 1). Bin ``t`` of step ``s`` is at
  ``(s * T + t) * dt`` seconds, ``dt`` = 1 ms unless given.
* **Other streams** (voltages, inputs, gradients, norms) become
  ``TimeSeries`` in the processing module ``spikestore``, named
  ``<quantity>.<escaped layer>`` (``@k`` appended per segment when the shape
  changed). Time runs along the first axis: a multi-step record ``[T, N, ...]``
  gives ``T`` rows stamped ``(s * T + t) * dt``; other records give one row
  stamped like their first bin.
* The network is the NWB ``Subject`` (``species`` "in silico", ``sex`` "U",
  ``date_of_birth`` = the store's creation time).
* **Run metadata** goes to ``notes`` (JSON) and the store's creation time to
  ``session_start_time``.

Float series are streamed record by record through hdmf's
``DataChunkIterator``; spike times are gathered in memory (16 bytes per
spike) because the Units table is written per unit, not per time.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..format import escape_layer
from ..reader import Run, Stream
from ._common import Progress, as_run, ensure_new, is_spike_stream, iter_blocks, layout, parse_steps, \
    report, select_streams, selected_counts, spike_events, step_mask

__all__ = ["to_nwb"]


def _bins_per_step(stream: Stream) -> int:
    shape = stream.segments[0].shape
    if layout(stream, shape) == "m":
        return int(shape[0])
    calls = stream.calls
    return int(calls.max()) + 1 if len(calls) else 1


def to_nwb(store: Run | str | os.PathLike[str], out: str | os.PathLike[str], *,
           streams: list[str] | None = None, steps: str | tuple[int | None, int | None] | None = None,
           dt: float = 1e-3, progress: Progress | None = None, overwrite: bool = False,
           session_description: str | None = None) -> Path:
    """Write the selected streams and steps of a store to an NWB file."""
    try:
        from hdmf.data_utils import DataChunkIterator
        from pynwb import NWBHDF5IO, NWBFile, TimeSeries
        from pynwb.file import Subject
    except ImportError:
        raise InvalidArgumentError("NWB export needs pynwb: pip install 'spikestore[nwb]'") from None
    if not dt > 0:
        raise InvalidArgumentError(f"dt must be a positive number of seconds, not {dt!r}")
    out = Path(out)
    ensure_new(out, overwrite)
    run, owned = as_run(store)
    rng = parse_steps(steps)
    try:
        keys = select_streams(run, streams)
        total = sum(sum(selected_counts(run[k], rng)) for k in keys)
        done = 0
        created = datetime.fromisoformat(run.doc["created"])
        nwb = NWBFile(
            session_description=session_description or f"Spiking network activity recorded by spikestore ({run.path.name})",
            identifier=str(uuid.uuid4()),
            session_start_time=created,
            notes=json.dumps(run.metadata, sort_keys=True),
            source_script="spikestore", source_script_file_name="spikestore",
            experiment_description=str(run.metadata.get("task", "spiking neural network training run")),
            keywords=["spiking neural network", "spikestore", "simulation"],
            subject=Subject(subject_id=run.path.stem, species="in silico", sex="U",
                            date_of_birth=created,  # the network "is born" when recording starts
                            description="Artificial spiking neural network (not an animal)"),
        )
        module = None

        def on_rows(n: int) -> None:
            nonlocal done
            done += n
            report(progress, done, total)

        units_layer, units_quantity, units_batch, units_neuron = [], [], [], []
        unit_times: list[np.ndarray] = []
        unit_ids: list[np.ndarray] = []
        n_units = 0
        for key in keys:
            s = run[key]
            if not len(s):
                continue
            T = _bins_per_step(s)
            if is_spike_stream(s):
                shapes = {seg.shape for seg in s.segments}
                kind = layout(s, s.segments[0].shape)
                n_batch = max((shp[1] if kind == "m" else shp[0]) if kind != "n" else 1 for shp in shapes)
                n_neuron = max(int(np.prod(shp[2:] if kind == "m" else shp[1:] if kind == "s" else shp))
                               for shp in shapes)
                base = n_units
                n_units += n_batch * n_neuron
                b, nn = np.divmod(np.arange(n_batch * n_neuron), n_neuron)
                units_layer += [s.layer] * (n_batch * n_neuron)
                units_quantity += [s.quantity] * (n_batch * n_neuron)
                units_batch.append(b)
                units_neuron.append(nn)
                for block in iter_blocks(s, rng):
                    ev = spike_events(block, layout(s, block.segment.shape))
                    unit_ids.append(base + ev["batch"] * n_neuron + ev["neuron"])
                    unit_times.append((block.steps[ev["record"]] * T + ev["t"]) * dt)
                    done += len(block.values)
                    report(progress, done, total)
                continue
            if module is None:
                module = nwb.create_processing_module(
                    "spikestore", "Non-spike streams recorded by spikestore monitors (voltages, inputs, gradients)")
            counts = selected_counts(s, rng)
            live = [seg for seg, n in zip(s.segments, counts) if n]
            for number, group in enumerate(_series_groups(live)):
                _add_series(module, s, key, group, number if len(_series_groups(live)) > 1 else None,
                            T, dt, rng, DataChunkIterator, TimeSeries, on_rows)
        if n_units:
            nwb.add_unit_column("layer", "Name of the layer in nn.Module.named_modules()")
            nwb.add_unit_column("quantity", "spikestore quantity the spikes come from (e.g. output)")
            nwb.add_unit_column("batch", "Index of the sample within the training batch")
            nwb.add_unit_column("neuron", "Flattened index of the neuron within the layer's record")
            ids = np.concatenate(unit_ids) if unit_ids else np.zeros(0, np.int64)
            times = np.concatenate(unit_times) if unit_times else np.zeros(0)
            order = np.lexsort((times, ids))
            ids, times = ids[order], times[order]
            bounds = np.searchsorted(ids, np.arange(n_units + 1))
            batch = np.concatenate(units_batch)
            neuron = np.concatenate(units_neuron)
            for u in range(n_units):
                nwb.add_unit(spike_times=times[bounds[u]:bounds[u + 1]], layer=units_layer[u],
                             quantity=units_quantity[u], batch=int(batch[u]), neuron=int(neuron[u]))
        tmp = out.with_name(out.stem + ".partial" + out.suffix)
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, out)
        return out
    finally:
        if owned:
            run.close()


def _series_groups(segments: list[Any]) -> list[list[Any]]:
    """Segments that can share one TimeSeries.

    Float segments whose shapes differ only in size (the smaller last batch
    of an epoch) are padded with NaN to the largest shape and kept together:
    one series per stream reads better than a series per epoch end.
    """
    if segments and all(seg.dtype.kind == "f" or seg.doc["dtype"] == "bfloat16" for seg in segments) \
            and len({len(seg.shape) for seg in segments}) == 1:
        return [segments]
    return [[seg] for seg in segments]


def _add_series(module: Any, s: Stream, key: str, group: list[Any], number: int | None, T: int, dt: float,
                rng: tuple[int | None, int | None], DataChunkIterator: Any, TimeSeries: Any,
                on_rows: Any) -> None:
    """One TimeSeries holding the records of ``group`` (segments of stream ``s``)."""
    shape = tuple(int(max(dims)) for dims in zip(*(seg.shape for seg in group))) if group[0].shape else ()
    padded = any(seg.shape != shape for seg in group)
    kind = layout(s, shape) if shape else "n"
    bins = kind == "m"  # a multi-step record is T rows of the series
    members = {id(seg) for seg in group}
    dtype = np.dtype(np.float32) if group[0].doc["dtype"] == "bfloat16" else \
        np.result_type(*(seg.dtype for seg in group))

    def rows() -> Any:  # one record at a time: bounded memory
        for block in iter_blocks(s, rng):
            if id(block.segment) not in members:
                continue
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
    order = np.argsort(np.concatenate([np.arange(seg.start, seg.stop)[step_mask(s.steps[seg.start:seg.stop], rng)]
                                       for seg in group]), kind="stable")
    if bins:
        stamps = ((steps_sel[:, None] * T + np.arange(shape[0])) * dt).reshape(-1)
        row_shape = shape[1:]
    elif kind == "s":
        stamps = (steps_sel * T + calls_sel) * dt
        row_shape = shape
    else:
        stamps = steps_sel * T * dt
        row_shape = shape
    assert np.all(order == np.arange(len(order)))  # segments are consecutive in record order
    name = f"{s.quantity}.{escape_layer(s.layer)}" + ("" if number is None else f"@{number}")
    data = DataChunkIterator(data=rows(), maxshape=(None, *row_shape), dtype=dtype,
                             buffer_size=max(1, (8 << 20) // max(1, int(np.prod(row_shape)) * 8)))
    note = " Smaller records (a short last batch) are padded with NaN." if padded else ""
    module.add(TimeSeries(
        name=name, data=data, unit="a.u.", timestamps=stamps,
        description=(f"spikestore stream {key!r}: {s.quantity} of layer {s.layer!r}, record shape "
                     f"{list(shape)} ({'one row per time bin' if bins else 'one row per record'}), "
                     f"dtype {group[0].doc['dtype']}; selection {json.dumps(s.selection)}.{note}")))


def _segment_index(stream: Stream, seg: Any, rng: tuple[int | None, int | None]) -> tuple[np.ndarray, np.ndarray]:
    """Steps and calls of the selected records of one segment (for timestamps)."""
    steps = stream.steps[seg.start:seg.stop]
    keep = step_mask(steps, rng)
    return steps[keep].astype(np.float64), stream.calls[seg.start:seg.stop][keep].astype(np.float64)
