"""The HDF5 backend: one ``.h5`` file, pre-encoded chunks, SWMR for live readers.

:func:`clear_writer_flags` and :data:`WINDOW_WAIT_S` are documented in
``docs/format.md`` §10 for users who open crashed files with plain h5py.
"""

from __future__ import annotations

from spikestore.backends.hdf5._backend import WINDOW_WAIT_S, HDF5Backend, clear_writer_flags

__all__ = ["WINDOW_WAIT_S", "HDF5Backend", "clear_writer_flags"]
