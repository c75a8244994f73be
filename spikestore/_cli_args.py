"""What every ``spikestore`` command that reads a store shares: its ``PATH`` argument, the storage
options that reach a URL, one-line failures, and what to say of a path that is not a store.

Here rather than in :mod:`spikestore.cli` so that commands living with what they show (the live views of
:mod:`spikestore.live`) take the same arguments and fail the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from spikestore.errors import DamagedStoreError, InvalidArgumentError, SpikestoreError, StoreNotFoundError

__all__ = ["StorePath", "explain_not_a_store", "fail", "location", "parse_storage_options", "storage_flags", "usage"]


def fail(exc: BaseException, where: Any = None) -> NoReturn:
    """Report ``exc`` in one line and exit 1.

    ``where`` is what the command was asked to open: when ``exc`` says that a local path is no store (or
    a damaged one), the path is first explained as :func:`explain_not_a_store` explains it.
    """
    if isinstance(where, Path) and isinstance(exc, (StoreNotFoundError, DamagedStoreError)):
        explain_not_a_store(where, exc)
    click.echo(f"spikestore: {exc}", err=True)
    raise SystemExit(1)


def usage(check: Callable[[Any], Any], value: Any) -> Any:
    """``check(value)``, where an argument it refuses is a usage error (exit 2), not a failure."""
    try:
        return check(value)
    except InvalidArgumentError as exc:
        raise click.UsageError(str(exc)) from None


class StorePath(click.ParamType[Path | str]):
    """A store's local path (a ``Path``, checked to exist when asked) or its URL (a ``str``, untouched)."""

    name = "path"

    def __init__(self, exists: bool) -> None:
        self.exists = exists

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from spikestore.backends import is_url

        if is_url(value):
            return str(value)  # (a Path would fold s3:// into s3:/)
        path = Path(value)
        if self.exists and not path.exists():
            self.fail(f"Path '{value}' does not exist.", param, ctx)
        return path


def _option_value(text: str) -> Any:
    """A ``--storage-option`` value: JSON when it parses as JSON (``true``, ``3``, ``{"region_name": ...}``),
    else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_storage_options(pairs: tuple[str, ...], text: str | None) -> dict[str, Any] | None:
    """``--storage-options JSON`` with each ``--storage-option KEY=VALUE`` over it; ``None`` when neither is given."""
    if text is None and not pairs:
        return None
    options: dict[str, Any] = {}
    if text is not None:
        try:
            options = json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON ({exc}): give an object such as "
                                     '\'{"endpoint_url": "https://s3.example.org"}\'',
                                     param_hint="--storage-options") from None
        if not isinstance(options, dict):
            raise click.BadParameter("give a JSON object ({...})", param_hint="--storage-options")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. endpoint_url=https://s3.example.org)",
                                     param_hint="--storage-option")
        options[key.strip()] = _option_value(value)
    return options


def storage_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that reads a store takes to reach one behind a URL (docs/cli.md)."""
    command = click.option(
        "--storage-options", "storage_options_json", metavar="JSON", envvar="SPIKESTORE_STORAGE_OPTIONS",
        help="For a URL (s3://...): the storage_options as one JSON object, e.g. "
             '\'{"endpoint_url": "https://s3.example.org"}\'; also read from $SPIKESTORE_STORAGE_OPTIONS.')(command)
    return click.option(
        "--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
        help="For a URL: one storage option (repeat for several; over --storage-options). VALUE is JSON "
             "when it parses as JSON (anon=true, client_kwargs='{\"region_name\": \"eu-west-1\"}'), "
             "else text.")(command)


def location(path: Path | str, pairs: tuple[str, ...], text: str | None) -> Any:
    """Where the store is (a ``Path``, or a ``StoreURL`` carrying its options).

    Options given for a local path are a usage error.
    """
    from spikestore.backends import location as store_location

    if text is not None and not isinstance(path, str) and not pairs:
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.get_parameter_source("storage_options_json") is ParameterSource.ENVIRONMENT:
            text = None  # $SPIKESTORE_STORAGE_OPTIONS is for URLs: a local path simply does not use it
    options = parse_storage_options(pairs, text)
    return usage(lambda p: store_location(p, options), path)


def explain_not_a_store(path: Path, exc: SpikestoreError) -> None:
    """For ``info`` on a local path that does not open as a store: say what it is, and exit.

    A path inside a store names the store (exit 1); a folder that holds stores lists them (exit 0); a
    folder that holds none says so (exit 1). Returns, for ``exc`` to be reported as it is, when the
    path is none of these (a store that lost its root document, a file that is no store).
    """
    from spikestore._tools.find_stores import enclosing_store, stores_in
    from spikestore._tools.summary import format_columns

    inside = enclosing_store(path)
    if inside is not None:
        where = f" (in stream {inside.stream!r})" if inside.stream else ""
        read = (f", read the stream with spikestore.open({str(inside.store)!r})[{inside.stream!r}]"
                if inside.stream else "")
        fail(StoreNotFoundError(f"{path} is not a store: it lies inside the store {inside.store}{where}; see "
                                 f"the store with `spikestore info {inside.store}`{read}"))
    if not path.is_dir():
        return
    found = stores_in(path)
    if not found and isinstance(exc, DamagedStoreError):
        return
    if not found:
        fail(StoreNotFoundError(f"{path} is not a store, and no store is in it or in its subfolders (2 levels "
                                 "down): a store is a Zarr folder (run.zarr) or an HDF5 file (run.h5) that "
                                 "spikestore.Store wrote"))
    click.echo(f"{path} is not a store; it holds {len(found)} store{'s' if len(found) > 1 else ''}:\n")
    rows = [[str(s.path), "-" if s.streams is None else str(s.streams), "-" if s.records is None else str(s.records),
             s.status] for s in found]
    click.echo(format_columns(["store", "streams", "records", "status"], rows, right=frozenset({1, 2})))
    click.echo(f"\nSee one with `spikestore info {found[0].path}`.")
    raise SystemExit(0)
