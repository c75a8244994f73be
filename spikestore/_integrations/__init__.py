"""The read side's integrations with other libraries: dask views (``dask_views``), the xarray engine
(``xarray_engine``, ``xr_variables``), DataTree (``datatree``) and ``dask.distributed`` (``distributed``).

Each imports its library when used, never at import time, except the xarray engine modules, which xarray
imports itself. This ``__init__`` stays empty: xarray imports the engine module whenever it opens any file.
"""
