"""The read side: lazy, read-only access to a store.

``run`` (:func:`~spikestore.open`, :class:`~spikestore.Run`) → ``stream``
(records along axis 0) → ``segment`` (one shape and dtype; the one chunk
iterator, ``iter_blocks``), with ``indexing`` (which records a key picks)
and ``storage`` (the one door to the backend: documents, sizes, cached
chunks). Views built on them: ``views`` (dask and ``Stream.to_xarray``),
``xarray_engine``, ``summary`` and ``verify``. Nothing here imports the
write side or torch.

This package's ``__init__`` stays empty: xarray imports the engine module of
every installed backend whenever it opens any file.
"""
