"""How close the write path can come to reading its input: each step of coding a frame, timed alone.

``tools/bench_write.py`` reports the write path's CPU per frame as three
stages: reading the input once, packing it (the hook's check-and-pack) and
coding the packed chunk. This tool splits the coding into the pieces no
gap coder can skip, on the same frames (``8x32x16x28x28`` float32 at 5%,
the reference workload's first LIF layer), one thread, thread CPU time per
frame, median of ``--passes`` passes:

* ``read``: ``np.count_nonzero`` over the frame's bits, the least any
  writer of float32 input spends;
* ``pack``: :class:`spikestore.codecs._packing.Packer` (check + pack);
* ``stream``: the packing loop alone, the record packed as one bit stream
  (``pack`` then cuts it into rows padded to whole bytes);
* ``count``: the spikes of the packed chunk (popcount);
* ``positions``: every spike's bit number taken out of the packed words
  (popcount, count-trailing-zeros, clear lowest bit: the loop the gap
  coder runs), written to an array, no gaps;
* ``gap bytes``: :func:`spikestore.codecs._kernels.gaps8`, the gap coder's
  scan (positions, real-bit numbering of padded rows, gap bytes, escapes);
* ``fused``: a kernel written here that packs the frame and writes its gap
  bytes in the same loop (checked to give ``gaps8``'s bytes), against
  ``stream`` alone: whether the extraction hides under the memory stream;
* ``zstd``: zstd level 1 of the chunk's gap bytes (the entropy stage);
* ``code``: the codec's whole ``encode`` of the chunk (what the writer runs);
* ``bitmap zstd``: zstd level 1 of the packed bitmap itself, the fastest
  coder here that needs no positions (and its bytes over the Shannon bound).

The report sets the budget the write path has if its CPU per frame is to
stay within ``--target`` times the read (``target * read - pack``) against
the pieces that must fit into it.

Run: ``python tools/bench_write_floor.py [--rate 0.05] [--passes 9] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, types, uint32, uint64
from numba.extending import intrinsic
from numcodecs.zstd import Zstd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_write import _cpu_per_item, make_pool, shannon_bytes  # a sibling module of this script

from spikestore.codecs import _kernels as K
from spikestore.codecs._chunk import codec_for
from spikestore.codecs._packing import Packer


@intrinsic
def _ctlz64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@njit(nogil=True, cache=False, boundscheck=False)
def _positions(b, pos):  # type: ignore[no-untyped-def]
    """Bit numbers of the ones of ``b`` (a whole number of 64-bit words) into ``pos``; their count."""
    k = 0
    for i in range(0, b.size, 8):
        w = K._load64(b, i)
        c = np.int64(K._ctpop64(w))
        for j in range(6):  # branch-light, as the gap coder: six written whatever the count
            pos[k + j] = np.int64(8 * i) + np.int64(K._cttz64(w))
            w &= w - uint64(1)
        for j in range(6, c):
            pos[k + j] = np.int64(8 * i) + np.int64(K._cttz64(w))
            w &= w - uint64(1)
        k += c
    return k


@njit(nogil=True, cache=False, boundscheck=False)
def _pack_gap_bytes(u, out, small):  # type: ignore[no-untyped-def]
    """Pack ``u`` as one bit stream into ``out`` and write its spikes' gap bytes (``min(gap, 255)``) to ``small``.

    The packing loop of ``_pack_stream`` with the gap extraction of each
    32-value mask inside it (four positions written whatever the count).
    Returns the number of spikes, -1 for a non-binary record, -2 when
    ``small`` (which needs 8 spare slots) is full.
    """
    bad = uint32(0)
    k = 0
    prev = np.int64(-1)
    room = small.size - 8
    for j in range(u.size // 32):
        ones, b = K._mask32(u, j * 32)
        K._store32(out, j * 4, ones)
        bad |= b
        w = uint64(ones)
        c = np.int64(K._ctpop64(w))
        base = np.int64(j * 32)
        last = prev
        for t in range(4):
            p = base + np.int64(K._cttz64(w))
            small[k + t] = min(p - last - 1, 255)
            last = p
            w &= w - uint64(1)
        for t in range(4, c):
            p = base + np.int64(K._cttz64(w))
            small[k + t] = min(p - last - 1, 255)
            last = p
            w &= w - uint64(1)
        if c:
            prev = base + np.int64(63 - _ctlz64(uint64(ones)))
        k += c
        if k > room:
            return -2
    return -1 if bad else k


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=0.05, help="firing probability (default 0.05)")
    p.add_argument("--shape", default="8,32,16,28,28", help="frame shape (default: the reference LIF1 output)")
    p.add_argument("--pool", type=int, default=16, help="distinct random frames (default 16)")
    p.add_argument("--passes", type=int, default=9, help="passes over the pool per piece (default 9)")
    p.add_argument("--target", type=float, default=1.5, help="CPU per frame allowed, in reads (default 1.5)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if shape[-1] > 32:
        raise SystemExit("--shape: this tool's fused kernel numbers one bit stream; use rows of at most 32")
    frames = [f.numpy() for f in make_pool(shape, args.rate, args.pool)]
    words = [f.reshape(-1).view(np.uint32) for f in frames]
    n = words[0].size
    packer = Packer()
    packed = [packer.pack(f).copy() for f in frames]  # type: ignore[union-attr]
    flat = [c.reshape(-1) for c in packed]
    codec = codec_for("bits", np.dtype(np.uint8), row_bits=shape[-1])
    zstd = Zstd(level=1)

    def gap_bytes(chunk: np.ndarray) -> np.ndarray:
        ones = int(K.popcount(chunk))
        small, escapes = np.empty(ones, np.uint8), np.empty(ones, np.int64)
        got, _ = K.gaps8(chunk, 8 * math.ceil(shape[-1] / 8), shape[-1], small, escapes)
        assert got == ones
        return small

    smalls = [gap_bytes(c) for c in flat]
    stream = np.empty(n // 8 + 16, np.uint8)
    fused_small = np.empty(n // 4 + 64, np.uint8)  # room for 25% firing
    for w, small in zip(words, smalls, strict=True):  # the fused kernel gives the gap coder's bytes
        got = _pack_gap_bytes(w, stream, fused_small)
        if got != small.size or not np.array_equal(fused_small[:got], small):
            raise SystemExit("the fused kernel's gap bytes differ from gaps8's")
    pos = np.empty(n + 16, np.int64)
    if _positions(flat[0][: flat[0].size // 8 * 8], pos) < smalls[0].size:
        raise SystemExit("positions: found fewer spikes than the gap coder")

    pieces = {
        "read": (np.count_nonzero, words),
        "pack": (packer.pack, frames),
        "stream": (lambda w: K._pack_stream(w, stream), words),
        "count": (K.popcount, flat),
        "positions": (lambda c: _positions(c[: c.size // 8 * 8], pos), flat),
        "gap bytes": (gap_bytes, flat),
        "fused": (lambda w: _pack_gap_bytes(w, stream, fused_small), words),
        "zstd": (zstd.encode, smalls),
        "code": (lambda c: codec.encode(c[None]), packed),
        "bitmap zstd": (zstd.encode, packed),
    }
    ms = {name: _cpu_per_item(fn, items, args.passes) * 1e3 for name, (fn, items) in pieces.items()}
    spikes = statistics.mean(s.size for s in smalls)
    bound = statistics.mean(shannon_bytes(n, s.size / n) for s in smalls)
    bitmap_ratio = statistics.mean(len(zstd.encode(c)) for c in packed) / bound
    code_ratio = statistics.mean(len(codec.encode(c[None])) for c in packed) / bound
    budget = args.target * ms["read"] - ms["pack"]
    print(f"{shape} float32 at {args.rate:.1%}: {spikes:,.0f} spikes a frame; thread CPU per frame, "
          f"median of {args.passes} passes over {args.pool} frames\n")
    for name, value in ms.items():
        print(f"  {name:12s} {value:6.3f} ms  {value / ms['read']:5.2f}x read"
              + (f"  ({value * 1e6 / spikes:.2f} ns a spike)" if name in ("positions", "gap bytes") else ""))
    total = (ms["pack"] + ms["code"]) / ms["read"]
    print(f"\npack + code: {total:.2f}x the read ({code_ratio:.3f}x the Shannon bound)")
    print(f"fused pack + gap bytes: {ms['fused'] - ms['stream']:+.3f} ms over the same packing loop alone "
          f"(the gap scan apart: {ms['gap bytes']:.3f} ms)")
    print(f"budget for coding within {args.target}x the read: {budget:.3f} ms a frame; taking the positions "
          f"alone costs {ms['positions']:.3f} ms, the entropy stage {ms['zstd']:.3f} ms; zstd of the bitmap "
          f"(no positions) {ms['bitmap zstd']:.3f} ms at {bitmap_ratio:.2f}x the bound")
    if args.json:
        args.json.write_text(json.dumps({"shape": shape, "rate": args.rate, "spikes": spikes, "ms": ms,
                                         "budget_ms": budget, "code_over_bound": code_ratio,
                                         "bitmap_zstd_over_bound": bitmap_ratio}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
