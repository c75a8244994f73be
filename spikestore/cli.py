"""The ``spikestore`` command: info, verify, export, plot.

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
except ImportError:  # pragma: no cover - exercised by the console script only
    sys.stderr.write("the spikestore command needs click: pip install 'spikestore[cli]'\n")
    raise SystemExit(2) from None

from spikestore.errors import InvalidArgumentError, SpikestoreError

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


def _fail(exc: BaseException) -> None:
    click.echo(f"spikestore: {exc}", err=True)
    raise SystemExit(1)


def _usage(check: Callable[[Any], Any], value: Any) -> Any:
    """``check(value)``, where an argument it refuses is a usage error (exit 2), not a failure."""
    try:
        return check(value)
    except InvalidArgumentError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spikestore")
def main() -> None:
    """Inspect, check, export and plot spikestore stores."""


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def info(path: Path) -> None:
    """Summary of the store at PATH: streams, records, steps, sizes, writer status."""
    from spikestore._read.run import open as open_run

    try:
        with open_run(path) as run:
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
            rows = run.summary()
            segs = sum(r["segments"] for r in rows)
            click.echo(f"streams    {len(rows)} ({segs} segments)\n")
            click.echo(run.summary_table())
    except SpikestoreError as exc:
        _fail(exc)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def verify(path: Path) -> None:
    """Check every document, every array's metadata and every chunk of PATH; exit 0 only when intact."""
    from spikestore._read.verify import verify as run_verify

    with _progress("verify", "chunk") as cb:
        problems = run_verify(path, progress=cb)
    for line in problems:
        click.echo(line)
    if problems:
        click.echo(f"{len(problems)} problem(s) found in {path}", err=True)
        raise SystemExit(1)
    click.echo(f"{path}: intact")


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["nwb", "hdf5", "parquet", "npz"]), default=None,
              help="Output format. Default: from OUT's suffix (.nwb, .h5/.hdf5, .parquet, .npz).")
@click.option("--streams", multiple=True, metavar="KEY",
              help="Stream key or pattern (e.g. 'output/*'); repeat for several. Default: all.")
@click.option("--steps", default=None, metavar="A:B", help="Only records with A <= step < B.")
@click.option("--dt", type=float, default=1e-3, show_default=True, help="Seconds per time bin (NWB).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def export(path: Path, out: Path, fmt: str | None, streams: tuple[str, ...], steps: str | None, dt: float,
           overwrite: bool) -> None:
    """Export the store at PATH to OUT for offline analysis (format from OUT's suffix unless --format)."""
    from spikestore.export import export as run_export
    from spikestore.export import format_for

    if fmt is None:
        fmt = _usage(format_for, out)

    kwargs: dict[str, Any] = {"streams": list(streams) or None, "steps": steps, "overwrite": overwrite}
    if fmt == "nwb":
        kwargs["dt"] = dt
    try:
        with _progress(f"export {fmt}", "record") as cb:
            written = run_export(path, out, fmt, progress=cb, **kwargs)
    except SpikestoreError as exc:
        _fail(exc)
    except OSError as exc:  # the output side: a full disk, a folder without write permission
        _fail(SpikestoreError(f"cannot write {out}: {exc}"))
    click.echo(f"wrote {written}")


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--kind", type=click.Choice(["raster", "rates", "grad-norms", "voltage"]), required=True,
              help="raster: spikes of one record; rates: firing rate per layer and step; "
                   "grad-norms: gradient norm per layer over steps; voltage: traces of one record.")
@click.option("--stream", default=None, metavar="KEY",
              help="Stream to plot (raster, voltage); for rates and grad-norms, the quantity "
                   "(default output / grad_input).")
@click.option("--record", type=int, default=-1, show_default=True, help="Record index (raster, voltage).")
@click.option("--sample", type=int, default=0, show_default=True, help="Sample of the batch (raster, voltage).")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Image file (.png, .pdf, .svg).")
def plot(path: Path, kind: str, stream: str | None, record: int, sample: int, out: Path) -> None:
    """Plot what the store at PATH recorded into an image file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from spikestore import plot as plots
    except ImportError:
        _fail(SpikestoreError("plotting needs matplotlib: pip install 'spikestore[plot]'"))
    from spikestore._read.run import open as open_run

    try:
        with open_run(path) as run:
            if kind in ("raster", "voltage"):
                if stream is None:
                    raise click.UsageError(f"--kind {kind} needs --stream KEY, e.g. --stream {run.streams[0]}")
                s = run[stream]
                if kind == "voltage":
                    _usage(plots.check_voltage_stream, s)
                draw = plots.raster if kind == "raster" else plots.voltage_traces
                ax = draw(s, record, sample=sample)
            elif kind == "rates":
                ax = plots.firing_rate_heatmap(run, quantity=stream or "output")
            else:
                ax = plots.grad_norms(run, quantity=stream or "grad_input")
            ax.figure.savefig(out, dpi=120, bbox_inches="tight")
    except (SpikestoreError, IndexError) as exc:
        _fail(exc)
    click.echo(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
