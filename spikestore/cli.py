"""The ``spikestore`` command: info, verify, export, plot, watch.

Every command takes a store's local path or its URL (``s3://bucket/run.zarr``),
with ``--storage-option KEY=VALUE`` / ``--storage-options JSON`` for what
reaches the URL (``docs/cli.md``, ``docs/object-storage.md``).

Library functions do the work and take progress callbacks; this module only
parses arguments, draws progress bars on a terminal and turns failures into
one-line messages with a non-zero exit status.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import click
    from click.core import ParameterSource
except ImportError:  # pragma: no cover - exercised by the console script only
    sys.stderr.write("the spikestore command needs click: pip install 'spikestore[cli]'\n")
    raise SystemExit(2) from None

from spikestore._cli_args import StorePath, fail, location, storage_flags, usage
from spikestore.errors import DamagedStoreError, SpikestoreError, StoreNotFoundError

__all__ = ["main"]


@contextmanager
def _progress(desc: str, unit: str) -> Iterator[Callable[[int, int], None] | None]:
    """A tqdm bar on a terminal, nothing otherwise (logs stay clean)."""
    if not sys.stderr.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    bar = tqdm(desc=desc, unit=unit, total=0, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


#: The export command's NWB metadata flags: parameter name -> (part, field) of the metadata each sets
#: (over the same field of --nwb-metadata's file).
_NWB_FLAGS: dict[str, tuple[str, str]] = {
    "session_description": ("session", "session_description"), "session_id": ("session", "session_id"),
    "experimenter": ("session", "experimenter"), "institution": ("session", "institution"),
    "lab": ("session", "lab"), "subject_id": ("subject", "subject_id"), "species": ("subject", "species"),
    "sex": ("subject", "sex"), "age": ("subject", "age"),
}


def _nwb_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """The export command's NWB metadata options (docs/cli.md): a JSON file and the most common fields."""
    helps = {
        "session_description": ("TEXT", "what the session was (default: names the store)."),
        "session_id": ("ID", "session id (no '/')."),
        "experimenter": ("NAME", "experimenter, 'Last, First'; repeat for several."),
        "institution": ("TEXT", "institution where the run was made."),
        "lab": ("TEXT", "lab where the run was made."),
        "subject_id": ("ID", "subject id (default: the store's name; no '/')."),
        "species": ("NAME", "subject species, a Latin binomial or an NCBI taxonomy link (default: NCBI's "
                            "'synthetic construct')."),
        "sex": ("M|F|O|U", "subject sex (default U)."),
        "age": ("DURATION", "subject age, ISO 8601 (P90D; a range P1D/P3D)."),
    }
    for name in reversed(_NWB_FLAGS):
        metavar, text = helps[name]
        command = click.option(f"--{name.replace('_', '-')}", name, metavar=metavar, default=None,
                               multiple=name == "experimenter", help=f"NWB only: {text}")(command)
    return click.option(
        "--nwb-metadata", "nwb_metadata", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        metavar="FILE", help='NWB only: session and subject fields from a JSON file {"session": {...}, '
                             '"subject": {...}} (the flags below win over it).')(command)


def _nwb_metadata(file: Path | None, flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``session`` and ``subject`` fields of --nwb-metadata's file with the flags over them, checked
    (a field that the archive would refuse is a usage error)."""
    from spikestore.export._nwb_metadata import check_session, check_subject, read_metadata_file

    session, subject = usage(read_metadata_file, file) if file is not None else ({}, {})
    parts = {"session": session, "subject": subject}
    for name, value in flags.items():
        if value not in (None, ()):
            part, field = _NWB_FLAGS[name]
            parts[part][field] = list(value) if isinstance(value, tuple) else value
    return usage(check_session, session), usage(check_subject, subject)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spikestore")
def main() -> None:
    """Inspect, check, export and plot spikestore stores."""


@main.command()
@click.argument("path", type=StorePath(exists=True))
@click.option("--bounds/--no-bounds", default=True, show_default=True,
              help="Read the spikes of the binary streams to measure their bytes against the entropy bounds.")
@storage_flags
def info(path: Path | str, bounds: bool, storage_option: tuple[str, ...], storage_options_json: str | None) -> None:
    """Summary of the store at PATH (a folder, file or URL): streams, records, steps, sizes, writer status,
    and how close the spike streams are to the entropy of their spikes.

    A folder that holds stores without being one is listed (a line per store, exit 0); a path inside a
    store names that store (exit 1).
    """
    from spikestore._read.run import open as open_run

    where = location(path, storage_option, storage_options_json)
    try:
        try:
            run = open_run(where)
        except (StoreNotFoundError, DamagedStoreError) as exc:
            fail(exc, where)
        with run:
            w = run.writer
            status = w["status"]
            if status == "open":
                status += " (being written, or the writer was killed; committed records are readable)"
            click.echo(f"store      {path} (format v{run.doc['format_version']})")
            click.echo(f"created    {run.doc['created']}")
            click.echo(f"writer     {status}; pid {w['pid']} on {w['host']}; dropped records: {w['dropped']}"
                       f" (queue full), {w.get('modified', 0)} (changed in place)")
            if w.get("error"):
                click.echo(f"error      {w['error']}")
            if run.metadata:
                meta = ", ".join(f"{k}={v}" for k, v in run.metadata.items() if k != "network")
                click.echo(f"metadata   {meta}")
            if run.flight_recorder is not None:
                from spikestore._tools.summary import flight_lines

                click.echo(flight_lines(run.flight_recorder, run.triggers))
            rows = run.summary()
            segs = sum(r["segments"] for r in rows)
            click.echo(f"streams    {len(rows)} ({segs} segments)\n")
            click.echo(run.summary_table())
            if bounds:
                from spikestore._tools.summary import format_coding, spike_coding

                with _progress("info: reading the spikes", "record") as cb:
                    coding = spike_coding((run[key] for key in run.streams), progress=cb)
                if coding:
                    click.echo("\ncoding     spike streams' bytes over the entropy of their spikes with one rate "
                               "(i.i.d.), a rate per neuron, and per neuron given its previous step\n")
                    click.echo(format_coding(coding))
    except SpikestoreError as exc:
        fail(exc)


@main.command()
@click.argument("path", type=StorePath(exists=False))
@storage_flags
def verify(path: Path | str, storage_option: tuple[str, ...], storage_options_json: str | None) -> None:
    """Check every document, every array's metadata and every chunk of PATH; exit 0 only when intact.

    When the storage fails (a URL that cannot be reached, access denied), says so and exits 1 without
    calling anything damaged.
    """
    from spikestore._tools.verify import verify as run_verify

    where = location(path, storage_option, storage_options_json)
    try:
        with _progress("verify", "chunk") as cb:
            problems = run_verify(where, progress=cb)
    except SpikestoreError as exc:
        fail(exc)
    for line in problems:
        click.echo(line)
    if problems:
        click.echo(f"{len(problems)} problem(s) found in {path}", err=True)
        raise SystemExit(1)
    click.echo(f"{path}: intact")


@main.command()
@click.argument("path", type=StorePath(exists=True))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["nwb", "hdf5", "parquet", "npz"]), default=None,
              help="Output format. Default: from OUT's suffix (.nwb, .h5/.hdf5, .parquet, .npz).")
@click.option("--streams", multiple=True, metavar="KEY",
              help="Stream key or pattern (e.g. 'output/*'); repeat for several. Default: all.")
@click.option("--steps", default=None, metavar="A:B", help="Only records with A <= step < B.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--dt", type=float, default=1e-3, show_default=True,
              help="NWB only: seconds per time bin (the spike times' resolution).")
@_nwb_flags
@storage_flags
def export(path: Path | str, out: Path, fmt: str | None, streams: tuple[str, ...], steps: str | None, dt: float,
           overwrite: bool, nwb_metadata: Path | None, storage_option: tuple[str, ...],
           storage_options_json: str | None, **nwb_flags: Any) -> None:
    """Export the store at PATH to OUT for offline analysis (format from OUT's suffix unless --format).

    An NWB file's session and subject come from the store unless given (--nwb-metadata and the flags
    after it; docs/cli.md shows a file the DANDI archive takes).
    """
    from spikestore.export import export as run_export
    from spikestore.export import format_for

    if fmt is None:
        fmt = usage(format_for, out)
    ctx = click.get_current_context()
    if fmt != "nwb":
        given = [f"--{name.replace('_', '-')}" for name in ("dt", "nwb_metadata", *_NWB_FLAGS)
                 if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"{', '.join(given)}: NWB export only, and this export is {fmt}")
    where = location(path, storage_option, storage_options_json)

    kwargs: dict[str, Any] = {"streams": list(streams) or None, "steps": steps, "overwrite": overwrite}
    if fmt == "nwb":
        kwargs["dt"] = dt
        kwargs["session"], kwargs["subject"] = _nwb_metadata(nwb_metadata, nwb_flags)
    try:
        with _progress(f"export {fmt}", "record") as cb:
            written = run_export(where, out, fmt, progress=cb, **kwargs)
    except SpikestoreError as exc:
        fail(exc)
    except OSError as exc:  # the output side: a full disk, a folder without write permission
        fail(SpikestoreError(f"cannot write {out}: {exc}"))
    click.echo(f"wrote {written}")


def _plot_stream(run: Any, kind: str, stream: str | None) -> str:
    """The stream a raster or voltage plot draws: ``--stream``, else a usage error that names one that fits."""
    from spikestore.plot import voltage_streams

    if stream is not None:
        return stream
    if kind == "voltage":
        volts = voltage_streams(run)
        if not volts:
            quantities = sorted({k.split("/", 1)[0] for k in run.streams})
            raise click.UsageError(
                f"this store has no voltage stream (v_seq/* or v/*, as AttributeMonitor('v_seq', ...) records); "
                f"its quantities are {', '.join(quantities) or 'none'}: draw spikes with --kind raster, "
                "rates with --kind rates, gradient norms with --kind grad-norms")
        raise _needs_stream(kind, volts)
    raise _needs_stream(kind, [k for k in run.streams if k.split("/", 1)[0] == "output"] or list(run.streams))


def _needs_stream(kind: str, fits: list[str]) -> click.UsageError:
    """The usage error of a plot that needs ``--stream``, naming the streams that fit."""
    more = f" (streams that fit: {', '.join(fits)})" if len(fits) > 1 else ""
    example = f", e.g. --stream {fits[0]}" if fits else ""
    return click.UsageError(f"--kind {kind} needs --stream KEY{example}{more}")


@main.command()
@click.argument("path", type=StorePath(exists=True))
@click.option("--kind", type=click.Choice(["raster", "rates", "grad-norms", "voltage"]), required=True,
              help="raster: spikes of one record; rates: firing rate per layer and step; "
                   "grad-norms: gradient norm per layer over steps; voltage: traces of one record.")
@click.option("--stream", default=None, metavar="KEY",
              help="Stream to plot (raster, voltage); for rates and grad-norms, the quantity "
                   "(default output / grad_input).")
@click.option("--record", type=int, default=None,
              help="Record index (raster, voltage). Default: the last record with the full batch, "
                   "not an epoch's smaller last batch.")
@click.option("--sample", type=int, default=0, show_default=True, help="Sample of the batch (raster, voltage).")
@click.option("--threshold", type=float, default=None, metavar="V",
              help="voltage: the firing threshold drawn as a dashed line (default 1.0, SpikingJelly's "
                   "v_threshold). The store does not keep it: give your neurons' own.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Image file (.png, .pdf, .svg).")
@storage_flags
def plot(path: Path | str, kind: str, stream: str | None, record: int | None, sample: int, threshold: float | None,
         out: Path, storage_option: tuple[str, ...], storage_options_json: str | None) -> None:
    """Plot what the store at PATH recorded into an image file.

    Voltage traces mark the spikes of the layer's output stream and draw --threshold; rates and grad-norms
    mark the steps whose records hold a smaller batch (an epoch's last).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from spikestore import plot as plots
    except ImportError:
        fail(SpikestoreError("plotting needs matplotlib: pip install 'spikestore[plot]'"))
    from spikestore._read.run import open as open_run

    where = location(path, storage_option, storage_options_json)
    try:
        with open_run(where) as run:
            if kind in ("raster", "voltage"):
                s = run[_plot_stream(run, kind, stream)]
                if kind == "voltage":
                    usage(plots.check_voltage_stream, s)
                    ax = plots.voltage_traces(s, record, sample=sample,
                                              threshold=plots.DEFAULT_THRESHOLD if threshold is None else threshold)
                else:
                    ax = plots.raster(s, record, sample=sample)
            elif kind == "rates":
                ax = plots.firing_rate_heatmap(run, quantity=stream or "output")
            else:
                ax = plots.grad_norms(run, quantity=stream or "grad_input")
            figure = ax.get_figure(root=True)
            assert figure is not None  # the plot functions draw on a figure of their own
            figure.savefig(out, dpi=120, bbox_inches="tight")
    except (SpikestoreError, IndexError) as exc:
        fail(exc)
    click.echo(f"wrote {out}")


from spikestore.live.serve import serve  # noqa: E402 - registered last: the group is defined above
from spikestore.live.watch import watch  # noqa: E402

main.add_command(watch)
main.add_command(serve)

if __name__ == "__main__":  # pragma: no cover
    main()
