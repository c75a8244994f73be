"""The read side's core: lazy, read-only access to a store.

``run`` (:func:`~spikestore.open`, :class:`~spikestore.Run`: a set of parts,
one per rank) → ``stream`` (records along axis 0 over every part) →
``parts`` (each part's records of a stream, and the one order over them) →
``segment`` (one shape and dtype; the one chunk iterator, ``iter_blocks``),
with ``indexing`` (which records a key picks), ``padded`` (the one-array
rule along the batch axis) and ``reader`` (the one door to the backend:
documents, sizes, cached chunks). Integrations with other libraries live in
:mod:`spikestore._integrations`, tools built on the reader in
:mod:`spikestore._tools`. Nothing here imports the write side or torch.

This package's ``__init__`` stays empty: xarray imports the engine module of
every installed backend whenever it opens any file.
"""
