"""The read side: lazy, read-only access to a store.

``run`` (:func:`~spikestore.open`, :class:`~spikestore.Run`) → ``stream``
(records along axis 0, indexing) → ``segment`` (one shape and dtype, chunk
iteration), plus the views built on them: ``summary``, ``verify``, the dask
graphs and the ``xarray_engine``. Nothing here imports the write side or torch.

This package's ``__init__`` stays empty: xarray imports the engine module of
every installed backend whenever it opens any file.
"""
