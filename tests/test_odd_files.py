"""Files of a Zarr store that are not what they claim: damage, in bounded time and memory.

A chunk or a document replaced by a FIFO, a folder, a link (to ``/dev/zero``,
``/dev/urandom``, or to a file out of the store) or a sparse file of
gigabytes is refused before anything is read from it: reading raises
:class:`DamagedStoreError` naming the file, and ``verify`` names it. Each
case runs in a child process under a memory limit and a timeout, so a
reader that blocks or reads without bound fails the test instead of hanging
it. (An HDF5 store is one file: its chunks and documents are no files of
their own.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import SMALL_STORE_STREAM as STREAM

CHUNK = f"{STREAM}/seg000000/c.1.0.0"
DOC = f"{STREAM}/zarr.json"
INDEX_CHUNK = f"{STREAM}/step/c.0"

CHILD = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
    import spikestore
    from spikestore import verify
    from spikestore.errors import DamagedStoreError
    try:
        with spikestore.open(sys.argv[1]) as run:
            s = run[sys.argv[2]]
            s[:], s.steps
    except DamagedStoreError as exc:
        print("damaged:", exc)
    else:
        print("read")
    for line in verify(sys.argv[1]):
        print("verify:", line)
""")


def _fifo(path: Path, _outside: Path) -> None:
    os.mkfifo(path)


def _folder(path: Path, _outside: Path) -> None:
    path.mkdir()


def _link_to(target: str) -> Callable[[Path, Path], None]:
    def make(path: Path, _outside: Path) -> None:
        path.symlink_to(target)
    return make


def _link_out(path: Path, outside: Path) -> None:
    # The very bytes that were there, in a file out of the store: the link is refused, not its bytes.
    copy = outside / path.name
    shutil.copy(path.with_name(path.name + ".orig"), copy)
    path.symlink_to(copy)


def _sparse(path: Path, _outside: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(8 << 30)


ODD = {"fifo": _fifo, "folder": _folder, "link-dev-zero": _link_to("/dev/zero"),
       "link-dev-urandom": _link_to("/dev/urandom"), "link-out-of-the-store": _link_out, "sparse-8GiB": _sparse}


def _replace(store: Path, rel: str, make: Callable[[Path, Path], None], outside: Path) -> Path:
    path = store / rel
    assert path.is_file()
    path.rename(path.with_name(path.name + ".orig"))
    make(path, outside)
    return path


def _child(store: Path, key: str = STREAM) -> list[str]:
    r = subprocess.run([sys.executable, "-c", CHILD, str(store), key], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("rel", [CHUNK, INDEX_CHUNK, DOC])
@pytest.mark.parametrize("odd", list(ODD))
def test_an_odd_file_in_place_of_a_chunk_or_document_is_damage(zstore, tmp_path, odd, rel):
    outside = tmp_path / "outside"
    outside.mkdir()
    path = _replace(zstore, rel, ODD[odd], outside)
    lines = _child(zstore)
    assert lines[0].startswith("damaged:") and str(path) in lines[0], lines
    assert any(line.startswith("verify:") and str(path) in line for line in lines), lines


@pytest.mark.slow
def test_a_folder_linked_out_of_the_store_is_damage(zstore, tmp_path):
    # A copy of the segment's own folder elsewhere, linked in its place.
    seg = zstore / STREAM / "seg000000"
    shutil.copytree(seg, tmp_path / "elsewhere")
    shutil.rmtree(seg)
    seg.symlink_to(tmp_path / "elsewhere")
    lines = _child(zstore)
    assert lines[0].startswith("damaged:") and "out of the store" in lines[0], lines
    assert any(line.startswith("verify:") and "out of the store" in line for line in lines), lines


@pytest.mark.slow
def test_a_store_read_through_a_link_to_it_reads_whole(zstore, tmp_path):
    # The store's own folder reached through a link: every file is inside the store.
    link = tmp_path / "link.zarr"
    link.symlink_to(zstore)
    assert _child(link) == ["read"]


OPEN_ODD_STORE = textwrap.dedent("""
    import sys
    import spikestore
    from spikestore import verify
    from spikestore.errors import StoreNotFoundError
    try:
        spikestore.open(sys.argv[1])
    except StoreNotFoundError as exc:
        print("not a store:", exc)
    print("verify:", verify(sys.argv[1]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("odd", ["fifo", "link-dev-zero"])
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_store_path_that_is_a_fifo_or_device_is_no_store(tmp_path, suffix, odd):
    path = tmp_path / f"s{suffix}"
    if odd == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    r = subprocess.run([sys.executable, "-c", OPEN_ODD_STORE, str(path)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("not a store:") and str(path) in lines[0], lines
    assert lines[1].startswith("verify: [") and str(path) in lines[1], lines
