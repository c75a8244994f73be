"""The ``engine="spikestore"`` backend of ``xarray.open_dataset`` and ``xarray.open_datatree``.

``xarray.open_dataset(path, engine="spikestore")`` gives one lazy variable per
stream. Records whose batch is smaller than the stream's largest (an epoch's
last batch) are padded along the batch axis, and ``"<key>:batch_size"`` says
how many rows of each record are real (the rule lives in
:mod:`spikestore._read.padded`). Opening reads the JSON documents only; a
stored chunk is read when values inside it are asked for, through the same
:class:`~spikestore._read.segment.Segment` code as ``run[key][i]``, so Zarr
and HDF5 stores behave the same. With ``chunks={}`` the dask chunks are the
stored chunks. ``Stream.to_xarray()`` and ``Stream.to_dask()`` live in
:mod:`spikestore._integrations.dask_views`, which labels variables the same way;
``open_datatree`` lives in :mod:`spikestore._integrations.datatree`.

xarray imports every installed engine whenever it opens any file, so this
module imports only numpy and xarray at the top (not torch, zarr or the rest
of spikestore).

Naming in the dataset: a stream is the variable ``"<quantity>/<layer>"``.
Each variable has its own dimensions, prefixed with its name
(``"output/2:record"``, ``"output/2:time"``, ``"output/2:batch"``,
``"output/2:neuron"``), because sizes differ between variables (record
counts, batch sizes, layer widths); ``"<name>:step"``, ``"<name>:call"``,
``"<name>:rank"`` and ``"<name>:batch_size"`` are coordinates along the
record dimension (:func:`~spikestore._integrations.dask_views.record_coords`).
A run recorded by several ranks gives the same variables, over every rank's
records in the stream's record order. A
stream whose records differ on an axis other than the batch axis (see
:mod:`spikestore._read.padded`) gives one variable per segment instead,
``"<key>#0"``, ``"<key>#1"``, ... in record order. ``Stream.to_xarray()``
gives one stream with plain names (``record``, ``time``, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xarray.backends import BackendEntrypoint

if TYPE_CHECKING:
    import xarray as xr

    from spikestore._read.run import Run

__all__ = ["SpikestoreBackendEntrypoint", "open_dataset"]


# -- the xarray backend ---------------------------------------------------------------
def _variables(run: Run, streams: Iterable[str] | None,
               drop: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    from spikestore._integrations.xr_variables import stream_variables

    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for key in run.streams if streams is None else streams:
        more_vars, more_coords = stream_variables(run[key], key, drop=drop)
        data_vars.update(more_vars)
        coords.update(more_coords)
    return data_vars, coords


def open_dataset(path: str | os.PathLike[str], *, streams: Iterable[str] | None = None,
                 drop_variables: Iterable[str] | None = None, backend: str | None = None,
                 storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """What ``xarray.open_dataset(path, engine="spikestore")`` returns.

    Parameters
    ----------
    path
        A local store, or the URL of one on object storage (``s3://bucket/run.zarr``).
    streams
        Stream keys to include (default: all).
    drop_variables
        Variable names to leave out (``"output/2"``, or ``"output/2#1"`` for a segment).
    backend
        ``"zarr"`` or ``"hdf5"``; by default chosen from the path's suffix.
    storage_options
        For a URL: what reaches it, as :func:`spikestore.open` takes them
        (``xarray.open_dataset(url, engine="spikestore", storage_options={...})``).
    """
    import xarray as xr

    from spikestore._read.run import open as open_run

    run = open_run(path, backend=backend, storage_options=storage_options)
    try:
        data_vars, coords = _variables(run, streams, set(drop_variables or ()))
    except BaseException:
        run.close()
        raise
    from spikestore._integrations.xr_variables import root_attrs

    ds = xr.Dataset(data_vars, coords=coords, attrs=root_attrs(run))
    ds.set_close(run.close)
    return ds


class SpikestoreBackendEntrypoint(BackendEntrypoint):
    """``xarray.open_dataset(path, engine="spikestore")``: a store as lazy variables.

    ``xarray.open_datatree`` and ``xarray.open_groups`` give the store's
    groups as a tree (:mod:`spikestore._integrations.datatree`).
    """

    description = "Open spikestore stores (Zarr or HDF5) lazily: one variable per stream"
    url = "https://spikestore.invalid/docs/reading.html"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "streams", "backend", "storage_options")
    supports_groups = True

    @staticmethod
    def _path(filename_or_obj: Any) -> str | os.PathLike[str]:
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            from spikestore.errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"engine='spikestore' opens a store by path or URL, not a {type(filename_or_obj).__name__}")
        return filename_or_obj

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: Iterable[str] | None = None,
                     streams: Iterable[str] | None = None, backend: str | None = None,
                     storage_options: dict[str, Any] | None = None) -> xr.Dataset:
        return open_dataset(self._path(filename_or_obj), streams=streams, drop_variables=drop_variables,
                            backend=backend, storage_options=storage_options)

    def open_datatree(self, filename_or_obj: Any, *, drop_variables: Iterable[str] | None = None,
                      streams: Iterable[str] | None = None, backend: str | None = None,
                      storage_options: dict[str, Any] | None = None) -> xr.DataTree:
        from spikestore._integrations.datatree import open_datatree

        return open_datatree(self._path(filename_or_obj), streams=streams, drop_variables=drop_variables,
                             backend=backend, storage_options=storage_options)

    def open_groups_as_dict(self, filename_or_obj: Any, *, drop_variables: Iterable[str] | None = None,
                            streams: Iterable[str] | None = None, backend: str | None = None,
                            storage_options: dict[str, Any] | None = None) -> dict[str, xr.Dataset]:
        from spikestore._integrations.datatree import open_groups_as_dict

        return open_groups_as_dict(self._path(filename_or_obj), streams=streams,
                                   drop_variables=drop_variables, backend=backend,
                                   storage_options=storage_options)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        # Called for every file xarray opens without an engine: cheap, never raises.
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        if isinstance(filename_or_obj, str) and "://" in filename_or_obj:
            return False  # a URL: no request here; name the engine (engine="spikestore")
        meta = Path(filename_or_obj) / "zarr.json"
        try:
            if not meta.is_file():
                return False
            return "spikestore" in json.loads(meta.read_text()).get("attributes", {})
        except (OSError, ValueError, AttributeError):
            return False
