"""The HDF5 backend: one ``.h5`` file, pre-encoded chunks, SWMR for live readers.

:func:`clear_writer_flags` and :data:`WINDOW_WAIT_S` are documented in
``docs/format.md`` §10 for users who open crashed files with plain h5py.

Modules, one job each:

- ``_backend``: :class:`HDF5Backend`, the backend protocol over one file
  (SWMR and structure windows);
- ``_faults``: a failed write becomes a clear ``OSError`` and stops all
  writing to the file; structure windows reserve their space first;
- ``_filters``: chunk codecs as HDF5 filter pipelines;
- ``_handles``: one shared open file per path and process;
- ``_headers``: the file and its groups created with header room, so
  structure windows change existing objects in place;
- ``_native``: what h5py does not wrap, called on the HDF5 library it loaded;
- ``_superblock``: the superblock's writer flags, cleared or read around
  after a crash.
"""

from __future__ import annotations

from spikestore.backends.hdf5._backend import HDF5Backend
from spikestore.backends.hdf5._handles import WINDOW_WAIT_S
from spikestore.backends.hdf5._superblock import clear_writer_flags

__all__ = ["WINDOW_WAIT_S", "HDF5Backend", "clear_writer_flags"]
