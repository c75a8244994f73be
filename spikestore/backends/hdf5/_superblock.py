"""The HDF5 superblock's writer flags: read them, clear them, or read around them.

One job: recovering files whose writer was killed, without HDF5's help (the
library refuses to open them, and ``h5clear`` is a separate program).

A writer killed in SWMR mode leaves the superblock's "open for SWMR write"
flags set; SWMR readers open such a file as it is. Appending
(``Store(mode="a")``, which has already checked that the old writer is dead)
clears the flags the way ``h5clear`` does (:func:`clear_writer_flags`). A
writer killed inside a structure window (see
:mod:`spikestore.backends.hdf5._backend`) leaves "open for write" set, which
even SWMR readers refuse; readers then read through a view of the file with
the flags cleared (:class:`RecoveredView`), since a reader never writes to
the file.

Outside SWMR, HDF5 writes the superblock last, so a writer killed inside a
window can leave objects (a group's new header chunk, say) past the end of
allocation the superblock records, which HDF5 then refuses as "addr
overflow". Both recoveries therefore also move that end to the end of the
file (what ``h5clear --increment=0`` would do): the bytes are there, and
space past the old end held nothing else.

Only version 2 and 3 superblocks are handled: they are the only ones a file
written with SWMR (HDF5 1.10 format or newer) has. Their checksum is Bob
Jenkins' lookup3 with initial value 0, which numcodecs implements.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numcodecs.jenkins import jenkins_lookup3

from spikestore.errors import FormatError

__all__ = ["FLAG_SWMR", "FLAG_WRITE", "RecoveredView", "Superblock", "clear_writer_flags"]

#: The file signature every HDF5 superblock starts with.
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Superblock status flag: the file is open for writing.
FLAG_WRITE = 0x01
#: Superblock status flag: the file is open for SWMR writing.
FLAG_SWMR = 0x04
#: Where a version 2/3 superblock with 8-byte addresses keeps its end-of-allocation address.
_EOA_AT = 12 + 2 * 8


@dataclass(frozen=True)
class Superblock:
    """The head of a version 2/3 superblock (the only ones SWMR files have).

    Attributes
    ----------
    head
        The superblock's bytes up to and including its checksum.
    flags
        The file consistency flags (:data:`FLAG_WRITE`, :data:`FLAG_SWMR`).
    eoa
        The end-of-allocation address (absolute): how long HDF5 believes
        the file is.
    base
        The base address that stored addresses are relative to.
    """

    head: bytes
    flags: int
    eoa: int
    base: int = 0

    @classmethod
    def read(cls, path: Path) -> Superblock | None:
        """Read the superblock at the start of ``path``.

        Parameters
        ----------
        path
            The file to read.

        Returns
        -------
        Superblock or None
            ``None`` when the file cannot be read or does not start with a
            version 2/3 superblock with 8-byte addresses.

        Raises
        ------
        FormatError
            If the superblock fails its checksum.
        """
        try:
            with open(path, "rb") as fh:
                head = fh.read(12 + 4 * 8 + 4)
        except OSError:
            return None
        if len(head) < 12 or head[:8] != _SIGNATURE or head[8] not in (2, 3):
            return None
        size = head[9]
        end = 12 + 4 * size
        if size != 8 or len(head) < end + 4:
            return None
        base, _ext, eoa, _root = struct.unpack_from("<4Q", head, 12)
        if struct.unpack_from("<I", head, end)[0] != jenkins_lookup3(head[:end], 0):
            raise FormatError(f"{path}: the HDF5 superblock fails its checksum; the file is damaged")
        return cls(head[: end + 4], head[11], base + eoa, base)

    def cleared(self, eof: int = 0) -> bytes:
        """The head with the status flags cleared, the end of allocation moved
        up to ``eof`` (the file's length) if that is further, and the checksum redone."""
        head = bytearray(self.head)
        head[11] = 0
        struct.pack_into("<Q", head, _EOA_AT, max(self.eoa, eof) - self.base)
        end = len(head) - 4
        head[end:] = struct.pack("<I", jenkins_lookup3(bytes(head[:end]), 0))
        return bytes(head)


def clear_writer_flags(path: str | os.PathLike[str]) -> bool:
    """Clear the "open for write" flags a killed writer left, like ``h5clear -s``.

    Also extends a file that ends before HDF5's recorded end of allocation
    (space allocated just before the kill and never written) with zeros,
    as ``h5clear --increment`` would, so a read-write open accepts it; and
    moves a recorded end of allocation that lies before the end of the file
    (objects a writer killed in a structure window wrote past it) to the end
    of the file. Only call this when no process has the file open for writing.

    Parameters
    ----------
    path
        The HDF5 file.

    Returns
    -------
    bool
        Whether anything was changed.

    Raises
    ------
    FormatError
        If the superblock fails its checksum.
    """
    sb = Superblock.read(Path(path))
    if sb is None:
        return False
    changed = False
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        if sb.flags or size > sb.eoa:
            fh.write(sb.cleared(size))
            changed = True
        if size < sb.eoa:
            fh.truncate(sb.eoa)
            changed = True
    return changed


class RecoveredView(io.RawIOBase):
    """A read-only view of an HDF5 file as :func:`clear_writer_flags` would leave it.

    Lets a reader open a file whose writer died inside a structure window
    without writing to a file that is not its own.

    Parameters
    ----------
    path
        The HDF5 file.
    sb
        Its superblock, as read by :meth:`Superblock.read`.
    """

    def __init__(self, path: Path, sb: Superblock) -> None:
        super().__init__()
        self._fh = open(path, "rb")  # noqa: SIM115 - held for the view's lifetime, closed in close()
        size = os.fstat(self._fh.fileno()).st_size
        self._head = sb.cleared(size)
        self._size = max(size, sb.eoa)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        data = os.pread(self._fh.fileno(), n, self._pos)
        view[: len(data)] = data
        view[len(data):n] = bytes(n - len(data))  # allocated, never written: zeros
        if self._pos < len(self._head):
            k = min(n, len(self._head) - self._pos)
            view[:k] = self._head[self._pos:self._pos + k]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()
