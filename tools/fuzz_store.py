#!/usr/bin/env python
"""Damage a small store in every way one can, then read it: never a wrong record, crash or hang.

For each backend, write a small store (bits with a shape change, raw floats,
bfloat16 alternating binary and not, scalars, int16, bool: several segments
and chunks), then tamper with one copy per case and read it back in a
process forked from a warm fork server, under a memory limit (``RLIMIT_AS``:
2 GiB above what the process had mapped) and a timeout: ``spikestore.open``,
every record and step of every stream, then ``verify``. Cases:

- Zarr, every kind of file (root, quantity and stream ``zarr.json``, segment
  and index array ``zarr.json``, data and index chunks): bit flips,
  truncations, deletions; hand edits of the documents (count, a segment's
  count, start, dtype, shape, chunk_records, encoding; the index's
  chunk_records; the array metadata's shape, dtype, chunk shape, codecs);
  two chunk files swapped.
- Zarr, files that are not what they claim, in place of a data chunk, an
  index chunk or a stream ``zarr.json``: a FIFO, a folder, a device node
  (where this user may make one), a sparse file of 8 GiB, a link to
  ``/dev/zero``, to ``/dev/urandom`` and to a copy of the file out of the
  store; a segment folder linked out of the store.
- Both backends: a stream's group or its quantity group deleted from the
  closed store (``rm -rf``, ``del f[...]`` with h5py); integers of a stream
  document written as floats (``count``, ``start``, ``chunk_records``...).
- HDF5, byte ranges of the file (superblock, object headers, B-trees and
  other index structures, the documents' attribute bytes, chunk data): byte
  flips and truncations; the same document edits and chunk swaps made
  through h5py (so HDF5's own checksums stay right).

Each outcome is one of ``exact`` (every record equal to the original),
``error`` (a SpikestoreError subclass was raised), ``verify-flagged`` (the
records differ and verify reports a problem), ``prefix`` (a document made
to say fewer records than were written: a strict prefix reads, bit-exact;
nothing can tell), or a failure: ``wrong-read`` (records differ and verify
says intact), ``silent-empty`` (a stream that held records reads as none,
or is gone, without an error, and verify says intact), ``foreign-exception``
(an exception that is no SpikestoreError), ``crash``, ``oom``, ``hang``.

Usage::

    python tools/fuzz_store.py --backend both --seed 0 --json fuzz.json [--quick]

Exit status 1 when a case failed. ``--show N`` prints a reproducer for up to
N failing cases of each class.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

FAILURES = ("wrong-read", "silent-empty", "foreign-exception", "crash", "oom", "hang")
CASE_TIMEOUT_S = 60.0
MEMORY_LIMIT = 2 << 30
HDF5_SIGNATURES = {b"OHDR": "object-header", b"OCHK": "object-header", b"BTHD": "btree", b"BTIN": "btree",
                   b"BTLF": "btree", b"EAHD": "btree", b"EAIB": "btree", b"EADB": "btree", b"EASB": "btree",
                   b"FAHD": "btree", b"FADB": "btree", b"FRHP": "heap", b"FHDB": "heap", b"FHIB": "heap",
                   b"FSHD": "heap", b"FSSE": "heap", b"SMTB": "heap", b"TREE": "btree", b"HEAP": "heap",
                   b"SNOD": "btree", b"GCOL": "heap"}

# -- the original store ----------------------------------------------------------------------


def write_original(path: Path) -> None:
    """A small store of every kind of stream, several segments and chunks each."""
    import torch

    import spikestore

    rng = np.random.default_rng(7)
    with spikestore.Store(path, chunk_bytes=96, metadata={"fuzz": True}) as store:
        for step in range(12):
            store.set_step(step)
            store.append("output/fc", (rng.random((2, 3 if step < 9 else 2, 10)) < 0.3).astype(np.float32))
            store.append("v_seq/fc", rng.standard_normal((2, 5)).astype(np.float32))
            bf = torch.from_numpy(rng.standard_normal(6).astype(np.float32)).bfloat16()
            store.append("x/bf16", bf if step % 3 else (bf > 0).bfloat16())
            store.append("grad_input/fc", float(rng.random()))
            store.append("x/int16", rng.integers(-300, 300, (4,), dtype=np.int16))
            store.append("x/bool", rng.random((2, 7)) < 0.5)


def digest(run: Any) -> dict[str, list[str]]:
    """Per stream, one hash per record of its step, call, time, dtype, shape and bytes."""
    out = {}
    for key in run.streams:
        s = run[key]
        steps, calls, times = s.steps, s.calls, s.times
        out[key] = [hashlib.sha256(f"{steps[j]}|{calls[j]}|{times[j]!r}|{r.dtype.str}|{r.shape}".encode()
                                   + r.tobytes()).hexdigest()[:16] for j, r in enumerate(s)]
    return out


# -- tampering ---------------------------------------------------------------------------------


def _zarr_kind(rel: str) -> str:
    parts = rel.split("/")
    if parts[-1] == "zarr.json":
        return {1: "root-doc", 2: "quantity-doc", 3: "stream-doc"}.get(len(parts), "array-meta")
    arr = next((p for p in parts if p.startswith("seg") or p in ("step", "call", "time")), "")
    return "data-chunk" if arr.startswith("seg") else "index-chunk"


def _edited(doc: dict[str, Any], fn: Any) -> dict[str, Any] | None:
    """A deep copy of ``doc`` changed by ``fn``; None when ``doc`` lacks what ``fn`` changes."""
    d: dict[str, Any] = json.loads(json.dumps(doc))
    try:
        fn(d)
    except (IndexError, KeyError, TypeError):
        return None
    return d


def _json_edits(doc: dict[str, Any], rng: random.Random) -> list[tuple[str, Any]]:
    """Hand edits of a stream document: (what, the edited document)."""
    edits = []

    def edit(what: str, fn: Any) -> None:
        d = _edited(doc, fn)
        if d is not None:
            edits.append((what, d))

    sp = "attributes" in doc
    root = doc["attributes"]["spikestore"] if sp else doc
    if "segments" not in root:
        return edits

    def on(d: dict[str, Any]) -> dict[str, Any]:
        return d["attributes"]["spikestore"] if sp else d

    last = len(root["segments"]) - 1
    edit("count+1", lambda d: on(d).update(count=on(d)["count"] + 1))
    edit("count-1", lambda d: on(d).update(count=on(d)["count"] - 1))
    edit("count*100", lambda d: on(d).update(count=on(d)["count"] * 100))
    edit("segment-count+1", lambda d: on(d)["segments"][last].update(count=on(d)["segments"][last]["count"] + 1))
    edit("segment-start+1", lambda d: on(d)["segments"][last].update(start=on(d)["segments"][last]["start"] + 1))
    for dt in ("int32", "float64", "uint8", "bool"):
        edit(f"dtype={dt}", lambda d, dt=dt: on(d)["segments"][0].update(dtype=dt))
    edit("stored_dtype=int32", lambda d: on(d)["segments"][0].update(stored_dtype="int32"))
    edit("shape-reversed", lambda d: on(d)["segments"][0].update(shape=on(d)["segments"][0]["shape"][::-1]))
    edit("shape+1", lambda d: on(d)["segments"][0].update(shape=[x + 1 for x in on(d)["segments"][0]["shape"]]))
    edit("stored_shape*2", lambda d: on(d)["segments"][0].update(
        stored_shape=[x * 2 for x in on(d)["segments"][0]["stored_shape"]]))
    edit("chunk_records+1", lambda d: on(d)["segments"][0].update(
        chunk_records=on(d)["segments"][0]["chunk_records"] + 1))
    edit("chunk_records*2", lambda d: on(d)["segments"][0].update(
        chunk_records=on(d)["segments"][0]["chunk_records"] * 2))
    edit("encoding-swapped", lambda d: on(d)["segments"][0].update(
        encoding={"bits": "raw", "raw": "bits"}[on(d)["segments"][0]["encoding"]]))
    edit("index-chunk_records*2", lambda d: on(d)["index"].update(chunk_records=on(d)["index"]["chunk_records"] * 2))
    edit("segments-swapped", lambda d: on(d).update(segments=on(d)["segments"][::-1]))
    edit("count=2**62", lambda d: on(d).update(count=2 ** 62))
    rng.shuffle(edits)
    return edits


def float_edits(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """Integers of a stream document written as floats (``40.0``): the float-integer cases."""
    sp = "attributes" in doc
    if "segments" not in (doc["attributes"]["spikestore"] if sp else doc):
        return []

    def on(d: dict[str, Any]) -> dict[str, Any]:
        return d["attributes"]["spikestore"] if sp else d

    edits = []
    for what, fn in (
            ("float count", lambda d: on(d).update(count=float(on(d)["count"]))),
            ("float segment count", lambda d: on(d)["segments"][0].update(
                count=float(on(d)["segments"][0]["count"]))),
            ("float segment start", lambda d: on(d)["segments"][-1].update(
                start=float(on(d)["segments"][-1]["start"]))),
            ("float chunk_records", lambda d: on(d)["segments"][0].update(
                chunk_records=float(on(d)["segments"][0]["chunk_records"]))),
            ("float index chunk_records", lambda d: on(d)["index"].update(
                chunk_records=float(on(d)["index"]["chunk_records"]))),
            ("float shape", lambda d: on(d)["segments"][0].update(
                shape=[float(x) for x in on(d)["segments"][0]["shape"]]))):
        d = _edited(doc, fn)
        if d is not None:
            edits.append((f"float-integer: {what}", d))
    return edits


#: Files that are not what they claim, made in place of a file of a Zarr store: (what, op).
ODD_FILES = (("fifo", "fifo"), ("folder", "mkdir"), ("device", "mknod"), ("sparse 8 GiB", "sparse"),
             ("link to /dev/zero", "link-dev-zero"), ("link to /dev/urandom", "link-dev-urandom"),
             ("link out of the store", "link-out"))


def odd_file_cases(by_kind: dict[str, list[str]], rng: random.Random, quick: bool) -> list[dict[str, Any]]:
    """The file-type, size and link cases of a Zarr store, and a segment folder linked out of it."""
    cases = []
    for kind in ("data-chunk", "index-chunk", "stream-doc"):
        for rel in rng.sample(by_kind[kind], min(1 if quick else 3, len(by_kind[kind]))):
            for what, op in ODD_FILES:
                group = "size" if op == "sparse" else "link" if op.startswith("link") else "file-type"
                cases.append({"kind": f"{group}:{kind}", "what": f"{what} in place of {rel}", "op": [op, rel]})
    segs = sorted({rel.rsplit("/", 1)[0] for rel in by_kind["data-chunk"]})
    for seg in rng.sample(segs, min(1 if quick else 3, len(segs))):
        cases.append({"kind": "link:folder", "what": f"{seg} linked out of the store", "op": ["link-out", seg]})
    return cases


def deleted_group_cases(nodes: list[str]) -> list[dict[str, Any]]:
    """A stream group, or its quantity group, deleted from the closed store: the silent-empty cases."""
    cases = []
    for node in nodes:
        cases.append({"kind": "deleted-group", "what": f"delete stream group {node}", "op": ["rmtree", node]})
    for quantity in sorted({n.split("/")[0] for n in nodes}):
        cases.append({"kind": "deleted-group", "what": f"delete quantity group {quantity}",
                      "op": ["rmtree", quantity]})
    return cases


def _array_meta_edits(meta: dict[str, Any]) -> list[tuple[str, Any]]:
    edits = []
    for what, fn in (
            ("shape[0]-1", lambda m: m["shape"].__setitem__(0, max(0, m["shape"][0] - 1))),
            ("shape[0]*1000", lambda m: m["shape"].__setitem__(0, m["shape"][0] * 1000)),
            ("dtype=int64", lambda m: m.update(data_type="int64")),
            ("chunk_shape*2", lambda m: m["chunk_grid"]["configuration"].update(
                chunk_shape=[c * 2 for c in m["chunk_grid"]["configuration"]["chunk_shape"]])),
            ("codecs-dropped", lambda m: m.update(codecs=m["codecs"][:1]))):
        m = _edited(meta, fn)
        if m is not None:
            edits.append((what, m))
    return edits


def zarr_cases(root: Path, rng: random.Random, quick: bool) -> list[dict[str, Any]]:
    """Every tampering case of a Zarr store: {"kind", "what", "apply": (op, args)}."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    by_kind: dict[str, list[str]] = defaultdict(list)
    for rel in files:
        by_kind[_zarr_kind(rel)].append(rel)
    cases = []
    per_kind = 2 if quick else 8
    for kind, rels in sorted(by_kind.items()):
        for rel in rng.sample(rels, min(per_kind, len(rels))):
            size = (root / rel).stat().st_size
            cases.append({"kind": kind, "what": f"flip {rel}", "op": ["flip", rel, rng.randrange(max(1, size * 8))]})
            cases.append({"kind": kind, "what": f"truncate {rel}",
                          "op": ["truncate", rel, rng.randrange(max(1, size))]})
            cases.append({"kind": kind, "what": f"delete {rel}", "op": ["delete", rel]})
    for rel in by_kind["stream-doc"]:
        doc = json.loads((root / rel).read_text())
        for what, new in _json_edits(doc, rng)[: 4 if quick else None]:
            cases.append({"kind": "stream-doc", "what": f"edit {rel}: {what}", "op": ["write", rel, json.dumps(new)]})
    for rel in rng.sample(by_kind["array-meta"], min(2 if quick else 6, len(by_kind["array-meta"]))):
        meta = json.loads((root / rel).read_text())
        for what, new in _array_meta_edits(meta):
            cases.append({"kind": "array-meta", "what": f"edit {rel}: {what}", "op": ["write", rel, json.dumps(new)]})
    for rel in by_kind["stream-doc"]:
        doc = json.loads((root / rel).read_text())
        cases.extend({"kind": "float-integer", "what": f"edit {rel}: {what}", "op": ["write", rel, json.dumps(new)]}
                     for what, new in float_edits(doc))
    cases.extend(odd_file_cases(by_kind, rng, quick))
    cases.extend(deleted_group_cases(sorted(rel.rsplit("/", 1)[0] for rel in by_kind["stream-doc"])))
    for kind in ("data-chunk", "index-chunk"):
        chunks = by_kind[kind]
        for _ in range(2 if quick else 6):
            if len(chunks) > 1:
                a, b = rng.sample(chunks, 2)
                cases.append({"kind": kind, "what": f"swap {a} <-> {b}", "op": ["swap", a, b]})
    return cases


def hdf5_regions(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges of an HDF5 file by kind: superblock, object headers, B-trees, heaps, documents, chunks."""
    import h5py

    data = path.read_bytes()
    regions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    regions["superblock"].append((0, 48))
    for sig, kind in HDF5_SIGNATURES.items():
        for m in re.finditer(re.escape(sig), data):
            regions[kind].append((m.start(), min(len(data), m.start() + 64)))
    for m in re.finditer(rb'\{"[a-z_]+": ', data):  # the documents' JSON text, NUL-padded
        end = data.find(b"\x00", m.start())
        regions["document"].append((m.start(), end if end > 0 else len(data)))
    with h5py.File(path, "r") as f:
        def visit(_name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.chunks:
                for i in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(i)
                    if info.byte_offset is not None:
                        regions["chunk-data"].append((info.byte_offset, info.byte_offset + info.size))
        f.visititems(visit)
    return regions


def hdf5_cases(path: Path, rng: random.Random, quick: bool) -> list[dict[str, Any]]:
    import h5py

    cases = []
    for kind, ranges in sorted(hdf5_regions(path).items()):
        for start, end in rng.sample(ranges, min(2 if quick else 8, len(ranges))):
            pos = rng.randrange(start, max(start + 1, end))
            cases.append({"kind": kind, "what": f"flip byte {pos} ({kind} at {start})",
                          "op": ["flip", "", pos * 8 + rng.randrange(8)]})
            cases.append({"kind": kind, "what": f"flip 8 bytes at {pos}", "op": ["flip8", "", pos]})
            if not quick or kind in ("superblock", "object-header"):
                cases.append({"kind": kind, "what": f"truncate at {pos}", "op": ["truncate", "", pos]})
    with h5py.File(path, "r") as f:
        nodes = [f"{q}/{layer}" for q in f if isinstance(f[q], h5py.Group) for layer in f[q]]
        for node in nodes:
            doc = json.loads(f[node].attrs["spikestore"])
            for what, new in _json_edits(doc, rng)[: 3 if quick else None]:
                cases.append({"kind": "document-edit", "what": f"edit {node}: {what}",
                              "op": ["attr", node, json.dumps(new)]})
            cases.extend({"kind": "float-integer", "what": f"edit {node}: {what}",
                          "op": ["attr", node, json.dumps(new)]} for what, new in float_edits(doc))
        cases.extend(deleted_group_cases(nodes))
        arrays = []
        f.visititems(lambda n, o: arrays.append(n)
                     if isinstance(o, h5py.Dataset) and o.id.get_num_chunks() > 1 else None)
    for _ in range(3 if quick else 10):
        a = rng.choice(arrays)
        cases.append({"kind": "chunk-swap", "what": f"swap chunks 0 and 1 of {a}", "op": ["hswap", a, a]})
        b = rng.choice(arrays)
        if b != a:
            cases.append({"kind": "chunk-swap", "what": f"chunk 0 of {a} <-> chunk 0 of {b}", "op": ["hswap0", a, b]})
    return cases


def apply(store: Path, op: list[Any]) -> None:
    """Apply one tampering ``op`` to the copy at ``store``."""
    kind, *args = op
    target = store / args[0] if store.is_dir() and args and args[0] else store
    if kind == "flip":
        data = bytearray(target.read_bytes())
        if data:
            data[(args[1] // 8) % len(data)] ^= 1 << (args[1] % 8)
            target.write_bytes(bytes(data))
    elif kind == "flip8":
        data = bytearray(target.read_bytes())
        for i in range(args[1], min(len(data), args[1] + 8)):
            data[i] ^= 0xA5
        target.write_bytes(bytes(data))
    elif kind == "truncate":
        with open(target, "r+b") as fh:
            fh.truncate(args[1])
    elif kind == "delete":
        target.unlink()
    elif kind == "write":
        target.write_text(args[1])
    elif kind in ("fifo", "mkdir", "mknod", "sparse", "link-dev-zero", "link-dev-urandom", "link-out"):
        _replace_file(store, target, kind)
    elif kind == "rmtree" and store.is_dir():
        shutil.rmtree(target)
    elif kind == "swap":
        a, b = store / args[0], store / args[1]
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
    elif kind in ("attr", "hswap", "hswap0", "rmtree"):
        import h5py

        from spikestore.backends.hdf5 import clear_writer_flags

        clear_writer_flags(store)
        with h5py.File(store, "r+") as f:
            if kind == "rmtree":
                del f[args[0]]
            elif kind == "attr":
                old = f[args[0]].attrs.get_id("spikestore")
                new = args[1].encode()
                if len(new) > old.dtype.itemsize:
                    raise ValueError(f"the edited document ({len(new)} bytes) does not fit its attribute")
                old.write(np.array(new, dtype=old.dtype))
            else:
                da, db = f[args[0]].id, f[args[1]].id
                ca, cb = (0, 0) if kind == "hswap0" else (0, 1)
                oa = da.get_chunk_info(ca).chunk_offset
                ob = db.get_chunk_info(cb).chunk_offset
                ma, ba = da.read_direct_chunk(oa)
                mb, bb = db.read_direct_chunk(ob)
                da.write_direct_chunk(oa, bb, mb)
                db.write_direct_chunk(ob, ba, ma)


def _replace_file(store: Path, target: Path, kind: str) -> None:
    """Put something that is not what it claims in place of the file (or folder) ``target`` of ``store``."""
    outside = store.with_name(store.name + ".outside")
    if kind == "link-out":  # the very bytes, out of the store
        outside.mkdir(exist_ok=True)
        copy = outside / target.name
        shutil.copytree(target, copy) if target.is_dir() else shutil.copy2(target, copy)
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.symlink_to(copy)
        return
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "mkdir":
        target.mkdir()
    elif kind == "mknod":
        import stat

        os.mknod(target, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers (needs CAP_MKNOD)
    elif kind == "sparse":
        with open(target, "wb") as fh:
            fh.truncate(8 << 30)
    else:
        target.symlink_to("/dev/zero" if kind == "link-dev-zero" else "/dev/urandom")


# -- the reading child ---------------------------------------------------------------------------


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _describe(exc: BaseException) -> dict[str, Any]:
    import spikestore

    return {"type": type(exc).__name__, "spikestore": isinstance(exc, spikestore.SpikestoreError),
            "message": str(exc)[:400]}


def _check_case(conn: Any, spec: dict[str, Any]) -> None:
    """In the child: open, read everything, verify; send what happened."""
    import resource

    import spikestore
    from spikestore import verify
    from spikestore.backends.hdf5 import _handles

    _handles.WINDOW_WAIT_S = 0.1  # nobody writes these copies
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + MEMORY_LIMIT, resource.getrlimit(resource.RLIMIT_AS)[1]))
    out: dict[str, Any] = {"read": None, "verify": None, "same": None, "prefix": False}
    try:
        got = digest(spikestore.open(spec["path"]))
        want = spec["digest"]
        out["same"] = got == want
        out["prefix"] = set(got) == set(want) and all(got[k] == want[k][:len(got[k])] for k in got)
        out["emptied"] = [k for k in want if want[k] and not got.get(k)]  # held records, reads none
    except MemoryError as exc:
        out["read"] = {"type": "MemoryError", "spikestore": False, "message": str(exc)[:200], "oom": True}
    except Exception as exc:  # noqa: BLE001 (any failure is data here: the parent classifies it)
        out["read"] = _describe(exc)
    try:
        out["verify"] = verify(spec["path"])
    except MemoryError as exc:
        out["verify_error"] = {"type": "MemoryError", "spikestore": False, "message": str(exc)[:200], "oom": True}
    except Exception as exc:  # noqa: BLE001
        out["verify_error"] = _describe(exc)
    conn.send(out)


def classify(result: dict[str, Any] | None, exitcode: int | None, timed_out: bool) -> str:
    if timed_out:
        return "hang"
    if result is None:
        return "crash"
    errs = [e for e in (result.get("read"), result.get("verify_error")) if e]
    if any(e.get("oom") for e in errs):
        return "oom"
    if any(not e["spikestore"] for e in errs):
        return "foreign-exception"
    if result["read"]:
        return "error"
    if result["same"]:
        return "exact"
    if result["verify"]:
        return "verify-flagged"
    if result.get("emptied"):
        return "silent-empty"
    return "prefix" if result["prefix"] else "wrong-read"


def run_case(ctx: Any, path: Path, want: dict[str, list[str]]) -> tuple[str, dict[str, Any] | None]:
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_check_case, args=(send, {"path": str(path), "digest": want}), daemon=True)
    proc.start()
    send.close()
    result = None
    timed_out = False
    try:
        if recv.poll(CASE_TIMEOUT_S):
            result = recv.recv()
        else:
            timed_out = proc.is_alive()
    except (EOFError, OSError):
        pass
    if proc.is_alive():
        proc.kill()
    proc.join(10)
    recv.close()
    return classify(result, proc.exitcode, timed_out), result


def _spread(cases: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` cases, taken from every kind in turn."""
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        by_kind[case["kind"]].append(case)
    out: list[dict[str, Any]] = []
    while len(out) < limit and any(by_kind.values()):
        for kind in sorted(by_kind):
            if by_kind[kind] and len(out) < limit:
                out.append(by_kind[kind].pop(0))
    return out


def run_backend(ctx: Any, backend: str, seed: int, quick: bool, show: int, log: Any = None,
                limit: int | None = None) -> dict[str, Any]:
    """Write the original store, tamper with copies case by case, and count the outcomes."""
    import spikestore

    rng = random.Random(seed)
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spikestore-fuzz-") as tmp:
        original = Path(tmp) / f"original{'.h5' if backend == 'hdf5' else '.zarr'}"
        write_original(original)
        want = digest(spikestore.open(original))
        cases = (hdf5_cases if backend == "hdf5" else zarr_cases)(original, rng, quick)
        if limit is not None:
            cases = _spread(cases, limit)
        for i, case in enumerate(cases):
            copy = Path(tmp) / f"case{i}{original.suffix}"
            shutil.copytree(original, copy) if original.is_dir() else shutil.copy2(original, copy)
            try:
                apply(copy, case["op"])
                outcome, result = run_case(ctx, copy, want)
            except Exception as exc:  # noqa: BLE001 (a tampering that could not be made, whatever the cause)
                outcome, result = "not-applied", {"read": _describe(exc)}
            outcomes[case["kind"]][outcome] += 1
            if outcome in FAILURES and len(examples[outcome]) < show:
                examples[outcome].append({"kind": case["kind"], "what": case["what"], "op": case["op"],
                                          "result": result})
            shutil.rmtree(copy, ignore_errors=True) if copy.is_dir() else copy.unlink(missing_ok=True)
            shutil.rmtree(copy.with_name(copy.name + ".outside"), ignore_errors=True)
            if log is not None and (i + 1) % 50 == 0:
                print(f"{backend}: {i + 1}/{len(cases)} cases", file=log, flush=True)
    totals: Counter[str] = Counter()
    for c in outcomes.values():
        totals.update(c)
    return {"backend": backend, "cases": sum(totals.values()), "outcomes": dict(totals),
            "by_kind": {k: dict(v) for k, v in sorted(outcomes.items())},
            "failures": sum(totals[f] for f in FAILURES), "examples": dict(examples),
            "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["zarr", "hdf5", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a few cases of each kind (CI)")
    ap.add_argument("--show", type=int, default=3, help="reproducers kept per failing class")
    ap.add_argument("--limit", type=int, help="at most this many cases per backend, spread over the kinds")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stress_crash import _context

    ctx = _context(shim=False)
    backends = ["zarr", "hdf5"] if args.backend == "both" else [args.backend]
    reports = [run_backend(ctx, b, args.seed, args.quick, args.show, log=sys.stderr, limit=args.limit)
               for b in backends]
    for r in reports:
        print(json.dumps({k: r[k] for k in ("backend", "cases", "outcomes", "failures", "seconds")}))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, default=str))
    return 1 if any(r["failures"] for r in reports) else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
