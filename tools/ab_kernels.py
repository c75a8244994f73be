"""A/B of the packing kernel: the library's plain numba against hand-written LLVM IR.

:func:`spikestore.codecs._kernels.pack_f32` compares 32 values in plain numba
code (a 32-value loop that LLVM vectorizes) and does not prefetch. This tool
holds the alternative, so the choice can be measured on any machine: a
hand-written LLVM IR intrinsic (``_mask32``: four 8-lane vector compares,
each bit-cast to a byte of the mask, ``vmovmskps`` on x86) and a stream loop
that asks for the cache lines 4 KiB ahead with ``llvm.prefetch``:

* ``plain``: the library's ``pack_f32`` as it is;
* ``ir``: the same ``pack_f32`` source compiled against the IR ``_mask32``
  and the prefetching stream loop (rows under 32 values, cut from a
  register inside the compare loop, take the IR compare without prefetch).

Both run in one process, alternated: ``A B`` in one round, ``B A`` in the
next (this machine is shared and noisy: only medians of interleaved runs
mean anything), over rounds of

1. the pack stage alone: ``Packer.pack`` over the pool's frames on one
   thread (thread CPU time per frame, as ``tools/bench_write.py`` times it);
2. the whole write path: ``Store.append`` of ``--frames`` frames through the
   writer thread to disk and ``close()``, as ``tools/bench_write.py`` runs it,
   timed after ``--warm`` flushed frames; CPU time of the whole process per
   frame (the "per core" figure) and wall time per frame.

The variant is switched by rebinding ``spikestore.codecs._kernels.pack_f32``,
which :func:`spikestore.codecs._packing.pack_float32` looks up at every call
(checked first, as is that both variants produce identical bytes on the
pool and refuse a non-binary frame). ``--processes N`` repeats the whole
A/B in ``N`` fresh processes and pools their rounds.

``--attribute`` adds, to the pack stage only, the two mixed variants (IR
compare without prefetch, plain compare with prefetch), to tell which of the
two pieces of IR a difference comes from.

Example (the run ``docs/performance.md`` reports, twice)::

    python tools/ab_kernels.py --rounds 6 --frames 160 --processes 4 --attribute
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types as pytypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types, uint32
from numba.extending import intrinsic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_write import make_pool, write_frames  # a sibling module of this script

from spikestore.codecs import _kernels as K
from spikestore.codecs._packing import Packer, load_kernels

# --- the IR variant ---------------------------------------------------------------------------------------------

_PREFETCH_AHEAD = 1024  # float32 values: 4 KiB


@intrinsic
def _mask32_ir(typingctx, arr, start):  # type: ignore[no-untyped-def]
    """``(ones, bad)`` of ``arr[start:start + 32]``: four 8-lane compares, each bit-cast to a byte."""
    sig = types.UniTuple(types.uint32, 2)(arr, start)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        a = context.make_array(signature.args[0])(context, builder, args[0])
        i32, vec = ir.IntType(32), ir.VectorType(ir.IntType(32), 8)
        one = ir.Constant(vec, [K._F32_ONE] * 8)
        ones = ir.Constant(i32, 0)
        stray = ir.Constant(vec, [0] * 8)
        for part in range(4):
            at = builder.add(args[1], ir.Constant(args[1].type, 8 * part))
            v = builder.load(builder.bitcast(builder.gep(a.data, [at]), vec.as_pointer()), align=4)
            is_one = builder.icmp_unsigned("==", v, one)
            byte = builder.zext(builder.bitcast(is_one, ir.IntType(8)), i32)
            ones = builder.or_(ones, builder.shl(byte, ir.Constant(i32, 8 * part)))
            other = builder.and_(v, builder.not_(builder.sext(is_one, vec)))
            stray = builder.or_(stray, other)
        any_bad = builder.icmp_unsigned("!=", builder.bitcast(stray, ir.IntType(256)),
                                        ir.Constant(ir.IntType(256), 0))
        return context.make_tuple(builder, signature.return_type, [ones, builder.zext(any_bad, i32)])

    return sig, codegen


@intrinsic
def _prefetch_ir(typingctx, arr, i):  # type: ignore[no-untyped-def]
    """``llvm.prefetch`` of ``arr[i]``'s cache line: read, no temporal locality (``prefetchnta``)."""
    sig = types.void(arr, i)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        a = context.make_array(signature.args[0])(context, builder, args[0])
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [byte_ptr], fnty=ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]))
        ptr = builder.bitcast(builder.gep(a.data, [args[1]]), byte_ptr)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 0), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


def _stream_kernel(mask32: Any, prefetch: bool) -> Any:
    """The IR variant's ``_pack_stream`` with the given 32-value compare, prefetching or not."""

    @njit(nogil=True, boundscheck=False)
    def stream(u, out):  # type: ignore[no-untyped-def]
        n = u.size
        bad = uint32(0)
        ahead = n - _PREFETCH_AHEAD - 16
        words = n // 32
        for j in range(words):
            if prefetch and j * 32 < ahead:
                _prefetch_ir(u, j * 32 + _PREFETCH_AHEAD)
                _prefetch_ir(u, j * 32 + _PREFETCH_AHEAD + 16)
            ones, b = mask32(u, j * 32)
            K.store32(out, j * 4, uint32(ones))
            bad |= b
            if (j % K._CHECK_WORDS) == K._CHECK_WORDS - 1 and bad:
                return False
        if n % 32:
            ones, b = K._mask_tail(u, 32 * words, n % 32)
            K.store32(out, 4 * words, uint32(ones))
            bad |= b
        return bad == 0

    return stream


def _recompiled(fn: Any, **names: Any) -> Any:
    """The library's kernel ``fn`` compiled again, with ``names`` bound to other kernels."""
    src = fn.py_func
    return njit(nogil=True, boundscheck=False)(
        pytypes.FunctionType(src.__code__, dict(vars(K), **names), src.__name__))


def pack_f32_with(mask32: Any, prefetch: bool) -> Any:
    """The library's ``pack_f32`` source, compiled against another 32-value compare.

    Both of its packing loops take the compare: the stream (prefetching or
    not) and the one that cuts rows under 32 values from a register.
    """
    return _recompiled(K.pack_f32, _pack_stream=_stream_kernel(mask32, prefetch),
                       _pack_short_rows=_recompiled(K._pack_short_rows, _mask32=mask32))


def variants(attribute: bool) -> dict[str, Any]:
    out = {"plain": K.pack_f32, "ir": pack_f32_with(_mask32_ir, True)}
    if attribute:
        out["ir-noprefetch"] = pack_f32_with(_mask32_ir, False)
        out["plain-prefetch"] = pack_f32_with(K._mask32, True)
    return out


# --- the A/B ----------------------------------------------------------------------------------------------------

def check_same_bytes(impls: dict[str, Any], frames: list[np.ndarray]) -> None:
    """Rebinding ``pack_f32`` reaches the packer; every variant packs the frames to the same bytes and
    refuses a non-binary frame."""
    packer = Packer()
    seen = []
    K.pack_f32 = lambda *args: seen.append(1) or impls["plain"](*args)
    packer.pack(frames[0])
    assert seen, "Packer.pack does not look up _kernels.pack_f32 at each call: the A/B would not switch"
    ref = None
    for name, fn in impls.items():
        K.pack_f32 = fn
        got = [packer.pack(f).copy() for f in frames[:4]]  # type: ignore[union-attr]
        ref = ref or got
        assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True)), f"{name} packs differently"
        bad = frames[0].copy()
        bad.reshape(-1)[bad.size // 2] = 0.5
        assert packer.pack(bad) is None, f"{name} took a non-binary frame"


def interleaved(impls: dict[str, Any], rounds: int, run: Callable[[], dict[str, float]]) -> dict[str, list[dict]]:
    """``run()`` with each variant bound, ``rounds`` times, the order reversed every other round."""
    names = list(impls)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            K.pack_f32 = impls[name]
            out[name].append(run())
        print(f"\rround {r + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def summary(vals: dict[str, list[float]], base: str, other: str) -> dict[str, Any]:
    """Medians and ranges of each variant's per-round values; ``base`` over ``other`` as a ratio of
    medians, and the median and range of the per-round ratios (round ``i`` of ``base`` over round ``i``
    of ``other``, run next to each other)."""
    med = {n: statistics.median(v) for n, v in vals.items()}
    pairs = [b / a for a, b in zip(vals[other], vals[base], strict=True)]
    return {"values_ms": vals, "median_ms": med, "range_ms": {n: [min(v), max(v)] for n, v in vals.items()},
            "ratio_of_medians": med[base] / med[other], "median_of_round_ratios": statistics.median(pairs),
            "round_ratios": [min(pairs), max(pairs)]}


def values(samples: dict[str, list[dict]], key: str) -> dict[str, list[float]]:
    return {n: [s[key] for s in v] for n, v in samples.items()}


def pooled(argv: list[str], processes: int) -> dict[str, Any]:
    """Run this A/B in ``processes`` fresh processes one after the other and pool their rounds.

    Each process places its frames, buffers and compiled code anew; on this
    machine a variant's median pack time moved by up to ~40% from one
    process to the next, so one process's alternation is not the whole story.
    """
    runs = []
    with tempfile.TemporaryDirectory(prefix="spikestore-ab-") as tmp:
        for i in range(processes):
            out = Path(tmp) / f"{i}.json"
            print(f"process {i + 1}/{processes}", file=sys.stderr)
            subprocess.run([sys.executable, __file__, *argv, "--processes", "1", "--json", str(out)], check=True,
                           stdout=subprocess.DEVNULL)
            runs.append(json.loads(out.read_text()))
    res = {k: runs[0][k] for k in runs[0] if not isinstance(runs[0][k], dict)}
    res.update(processes=processes, rounds=sum(r["rounds"] for r in runs))
    for key in ("pack", "write_cpu", "write_wall"):
        if key in runs[0]:
            vals = {n: [x for r in runs for x in r[key]["values_ms"][n]] for n in runs[0][key]["values_ms"]}
            res[key] = summary(vals, "plain", "ir")
            res[key]["per_process_ratio_of_medians"] = [r[key]["ratio_of_medians"] for r in runs]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8, help="alternations (A B, then B A, ...; default 8)")
    ap.add_argument("--frames", type=int, default=160, help="frames appended per write-path run (default 160)")
    ap.add_argument("--warm", type=int, default=16, help="frames flushed before the clocks start (default 16)")
    ap.add_argument("--rate", type=float, default=0.05, help="firing probability (default 0.05)")
    ap.add_argument("--shape", default="8,32,16,28,28", help="frame shape (default: the reference LIF1 output)")
    ap.add_argument("--backend", choices=["zarr", "hdf5"], default="zarr")
    ap.add_argument("--pool", type=int, default=16, help="distinct random frames cycled through")
    ap.add_argument("--attribute", action="store_true", help="also time the two mixed variants (pack stage)")
    ap.add_argument("--skip-write", action="store_true", help="the pack stage only")
    ap.add_argument("--processes", type=int, default=1,
                    help="repeat the whole A/B in this many fresh processes and pool their rounds (default 1)")
    ap.add_argument("--json", default=None, help="write the results here as JSON")
    args = ap.parse_args(argv)
    if args.processes > 1:
        child = [f"--{k}={v}" for k, v in (("rounds", args.rounds), ("frames", args.frames), ("warm", args.warm),
                                           ("rate", args.rate), ("shape", args.shape), ("backend", args.backend),
                                           ("pool", args.pool))]
        child += ["--attribute"] * args.attribute + ["--skip-write"] * args.skip_write
        res = pooled(child, args.processes)
    else:
        res = run_ab(args)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def run_ab(args: argparse.Namespace) -> dict[str, Any]:
    """The A/B in this process (see the module docstring)."""
    shape = tuple(int(s) for s in args.shape.split(","))
    pool = make_pool(shape, args.rate, args.pool)
    frames = [f.numpy() for f in pool]
    load_kernels()
    library = K.pack_f32
    impls = variants(args.attribute)
    root = Path(tempfile.mkdtemp(prefix="spikestore-ab-"))
    try:
        print("compiling and checking the variants ...", file=sys.stderr)
        check_same_bytes(impls, frames)
        packer = Packer()

        def pack_stage() -> dict[str, float]:
            t = time.thread_time()
            for f in frames:
                packer.pack(f)
            return {"ms": (time.thread_time() - t) / len(frames) * 1e3}

        res: dict[str, Any] = {"frame_shape": list(shape), "firing_rate": args.rate, "rounds": args.rounds}
        print("pack stage alone ...", file=sys.stderr)
        pack_stage()  # first touch of the frames
        res["pack"] = summary(values(interleaved(impls, args.rounds, pack_stage), "ms"), "plain", "ir")
        if not args.skip_write:
            path = root / ("ab.h5" if args.backend == "hdf5" else "ab.zarr")

            def write_path() -> dict[str, float]:
                c = write_frames(path, args.backend, pool, args.frames, args.warm)
                timed = args.frames - args.warm
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                return {"cpu_ms": (c["cpu1"] - c["cpu_warm"]) / timed * 1e3,
                        "wall_ms": (c["wall1"] - c["wall_warm"]) / timed * 1e3}

            print(f"write path, {args.backend}, {args.frames} frames a run ...", file=sys.stderr)
            write_path()  # warm-up: file system, writer thread, codecs
            two = {n: impls[n] for n in ("plain", "ir")}
            runs = interleaved(two, args.rounds, write_path)
            res["write_cpu"] = summary(values(runs, "cpu_ms"), "plain", "ir")
            res["write_wall"] = summary(values(runs, "wall_ms"), "plain", "ir")
            res.update(backend=args.backend, frames_per_run=args.frames, warm=args.warm)
    finally:
        K.pack_f32 = library
        shutil.rmtree(root, ignore_errors=True)

    return res


def report(res: dict[str, Any]) -> None:
    def show(label: str, s: dict[str, Any]) -> None:
        meds = ", ".join(f"{n} {m:.3f} ms [{s['range_ms'][n][0]:.3f}-{s['range_ms'][n][1]:.3f}]"
                         for n, m in s["median_ms"].items())
        print(f"  {label:28s} {meds}; plain/ir {s['ratio_of_medians']:.3f} "
              f"(per round: median {s['median_of_round_ratios']:.3f}, {s['round_ratios'][0]:.3f}-"
              f"{s['round_ratios'][1]:.3f})")
        if "per_process_ratio_of_medians" in s:
            print(f"  {'':28s} per process: " + ", ".join(f"{r:.3f}" for r in s["per_process_ratio_of_medians"]))

    where = f", {res['processes']} processes" if res.get("processes", 1) > 1 else ""
    print(f"plain numba vs LLVM IR packing, {tuple(res['frame_shape'])} float32 at p={res['firing_rate']}, "
          f"{res['rounds']} alternated rounds{where}")
    show("pack alone, CPU per frame", res["pack"])
    if "write_cpu" in res:
        show("write path, CPU per frame", res["write_cpu"])
        show("write path, wall per frame", res["write_wall"])
        per = math.prod(res["frame_shape"])
        gbs = {n: per / m / 1e6 for n, m in res["write_cpu"]["median_ms"].items()}
        print("  write path per core         " + ", ".join(f"{n} {g:.3f} G spikes/s" for n, g in gbs.items()))


if __name__ == "__main__":
    raise SystemExit(main())
