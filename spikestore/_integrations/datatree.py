"""``xarray.open_datatree(path, engine="spikestore")``: a store as a tree of groups.

The flat dataset (:mod:`spikestore._integrations.xarray_engine`) puts every
stream in one namespace, so its names carry the stream key
(``"output/2:record"``). The tree mirrors the store's own groups instead:
the root node holds the store's attributes, one node per quantity
(``/output``), and under it one node per layer (``/output/2``, the layer
name escaped as in the store, ``docs/format.md`` §1.1) holding that stream's
variable, named after the quantity (``"<quantity>_values"`` where the
quantity is also the name of a dimension or coordinate, e.g. ``time``), with
plain dimension names (``record``, ``time``, ``batch``, ``neuron``) and the
coordinates ``step``, ``call``, ``rank`` and ``batch_size`` along
``record``. A stream whose records do not fit one array holds one variable
per segment (``output#0``, ``output#1``), with prefixed dimensions, as in
the flat dataset. Values are read lazily through the same arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["open_datatree", "open_groups_as_dict"]


#: Names a layer's node uses for its dimensions and coordinates.
_NODE_NAMES = frozenset({"record", "step", "call", "batch_size", "rank", "time", "batch", "neuron"})


def _variable_name(quantity: str, dims: tuple[str, ...]) -> str:
    """The quantity, unless a dimension or coordinate of the node has that name (a quantity
    called ``time`` or ``step``): then ``"<quantity>_values"``."""
    return f"{quantity}_values" if quantity in _NODE_NAMES or quantity in dims else quantity


def open_groups_as_dict(path: str | os.PathLike[str], *, streams: Iterable[str] | None = None,
                        drop_variables: Iterable[str] | None = None, backend: str | None = None,
                        storage_options: dict[str, Any] | None = None) -> dict[str, xr.Dataset]:
    """``{"/": root, "/output": ..., "/output/2": ...}``: what :func:`xarray.open_groups` returns.

    Parameters
    ----------
    streams
        Stream keys to include (default: all).
    drop_variables
        Stream keys to leave out (``"output/2"``).
    backend
        ``"zarr"`` or ``"hdf5"``; by default chosen from the path's suffix.
    storage_options
        For a URL (``s3://bucket/run.zarr``): what reaches it, as
        :func:`spikestore.open` takes them.

    Closing the root dataset (``"/"``) closes the store.
    """
    import xarray as xr

    from spikestore._format import stream_node
    from spikestore._integrations.xr_variables import root_attrs, stream_variables
    from spikestore._read.run import open as open_run

    run = open_run(path, backend=backend, storage_options=storage_options)
    drop = set(drop_variables or ())
    try:
        groups: dict[str, xr.Dataset] = {"/": xr.Dataset(attrs=root_attrs(run))}
        for key in run.streams if streams is None else streams:
            if key in drop:
                continue
            stream = run[key]
            groups.setdefault(f"/{stream.quantity}", xr.Dataset(attrs={"quantity": stream.quantity}))
            data_vars, coords = stream_variables(stream, _variable_name(stream.quantity, stream.dims),
                                                 prefix=False)
            groups[f"/{stream_node(key)}"] = xr.Dataset(data_vars, coords=coords, attrs={
                "stream": key, "quantity": stream.quantity, "layer": stream.layer})
    except BaseException:
        run.close()
        raise
    groups["/"].set_close(run.close)
    return groups


def open_datatree(path: str | os.PathLike[str], *, streams: Iterable[str] | None = None,
                  drop_variables: Iterable[str] | None = None, backend: str | None = None,
                  storage_options: dict[str, Any] | None = None) -> xr.DataTree:
    """What ``xarray.open_datatree(path, engine="spikestore")`` returns (parameters as in
    :func:`open_groups_as_dict`); ``tree.close()`` closes the store."""
    import xarray as xr

    if not hasattr(xr, "DataTree"):  # pragma: no cover - depends on the installed xarray
        from spikestore.errors import MissingDependencyError

        raise MissingDependencyError(
            f"xarray {xr.__version__} has no DataTree: pip install 'xarray>=2024.10' "
            "(or use xarray.open_dataset(path, engine='spikestore'), one variable per stream)")
    groups = open_groups_as_dict(path, streams=streams, drop_variables=drop_variables, backend=backend,
                                 storage_options=storage_options)
    try:
        tree = xr.DataTree.from_dict(groups)
    except BaseException:
        groups["/"].close()
        raise
    tree.set_close(groups["/"].close)
    return tree
