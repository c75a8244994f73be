"""How close the write path can come to reading its input: each step of coding a frame, timed alone.

``tools/bench_write.py`` reports the write path's CPU per frame as three
stages: reading the input once, packing it (the hook's check-and-pack) and
coding the packed chunk. This tool splits the coding into the pieces no
gap coder can skip, on the same frames (``8x32x16x28x28`` float32 at 5%,
the reference workload's first LIF layer), one thread, thread CPU time per
frame. The pieces take turns: each round times one pass of every piece over
the frames, in an order that rotates, and each piece's figure is the median
over ``--passes`` rounds of its time over the read's in the same round (the
machine's speed drifts between rounds; pieces timed one after another in
blocks of passes moved by up to 50%):

* ``read``: ``np.count_nonzero`` over the frame's bits, the least any
  writer of float32 input spends;
* ``pack``: :class:`spikestore.codecs._packing.Packer` (check + pack);
* ``stream``: the packing loop alone, the record packed as one bit stream
  (``pack`` also cuts it into rows padded to whole bytes, from a register
  for rows under 32 values);
* ``count``: the spikes of the packed chunk (popcount);
* ``positions``: every spike's bit number taken out of the packed words
  (popcount, count-trailing-zeros, clear lowest bit: the gap coder's
  ``_block_positions``), written to an array, no gaps;
* ``gap bytes``: :func:`spikestore.codecs._gap_kernels.gaps8`, the gap coder's
  scan (positions, real-bit numbering of padded rows, gap bytes, escapes);
* ``fused``: a kernel written here that packs the frame and writes its gap
  bytes in the same loop (checked to give ``gaps8``'s bytes), against
  ``stream`` alone: whether the extraction hides under the memory stream;
* ``zstd``: zstd level 1 of the chunk's gap bytes (the entropy stage);
* ``code``: the codec's whole ``encode`` of the chunk (what the writer runs);
* ``bitmap zstd``: zstd level 1 of the packed bitmap itself, the fastest
  coder here that needs no positions (and its bytes over the Shannon bound);
* ``rice``: a whole coder in one pass, Golomb-Rice codes of the gaps written
  as the positions come out (checked by decoding; its bytes over the bound).

``pack`` + ``rice`` is the cheapest complete write path found; the kernels
written for this tool are in ``tools/floor_kernels.py``.

The report sets the budget the write path has if its CPU per frame is to
stay within ``--target`` times the read (``target * read - pack``) against
the pieces that must fit into it.

Run: ``python tools/bench_write_floor.py [--rate 0.05] [--passes 15] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs.zstd import Zstd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor_kernels as F  # sibling modules of this script
from bench_write import make_pool, shannon_bytes

from spikestore.codecs import _gap_kernels as G
from spikestore.codecs import _kernels as K
from spikestore.codecs._chunk import codec_for
from spikestore.codecs._packing import Packer


def _take_turns(pieces: dict[str, tuple[Callable[[Any], Any], list[Any]]],
                rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each piece's median ms a frame, and median of its time over the read's in the same round."""
    names = list(pieces)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, items = pieces[name]
            t = time.thread_time()
            for item in items:
                fn(item)
            times[name].append((time.thread_time() - t) / len(items))
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    over = {name: statistics.median(a / b for a, b in zip(t, times["read"], strict=True))
            for name, t in times.items()}
    return ms, over


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=0.05, help="firing probability (default 0.05)")
    p.add_argument("--shape", default="8,32,16,28,28", help="frame shape (default: the reference LIF1 output)")
    p.add_argument("--pool", type=int, default=16, help="distinct random frames (default 16)")
    p.add_argument("--passes", type=int, default=15, help="rounds of one pass per piece (default 15)")
    p.add_argument("--target", type=float, default=1.5, help="CPU per frame allowed, in reads (default 1.5)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if shape[-1] > 32 or 64 % (8 * math.ceil(shape[-1] / 8)):
        raise SystemExit("--shape: this tool's kernels take rows of at most 32 values padded to 8, 16 or 32 bits")
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
        got, _ = G.gaps8(chunk, 8 * math.ceil(shape[-1] / 8), shape[-1], small, escapes)
        assert got == ones
        return small

    smalls = [gap_bytes(c) for c in flat]
    stream = np.empty(n // 8 + 16, np.uint8)
    fused_small = np.empty(n // 4 + 64, np.uint8)  # room for 25% firing
    for w, small in zip(words, smalls, strict=True):  # the fused kernel gives the gap coder's bytes
        got = F.pack_gap_bytes(w, stream, fused_small)
        if got != small.size or not np.array_equal(fused_small[:got], small):
            raise SystemExit("the fused kernel's gap bytes differ from gaps8's")
    span = 8 * math.ceil(shape[-1] / 8)
    real_bits = n // span * shape[-1] if span == 32 else n
    k = F.rice_parameter(statistics.mean(s.size for s in smalls) / n)
    rice_out = np.empty(F.rice_room(n, max(s.size for s in smalls), k), np.uint8)
    block_pos = np.empty(8 * 1024 + 8, np.int64)
    rice_sizes = []
    for c, small in zip(flat, smalls, strict=True):
        rice_sizes.append(F.rice(c, span, shape[-1], k, rice_out, block_pos))
        if rice_sizes[-1] < 0:
            raise SystemExit("rice: a spike in a row's padding")
        back = np.empty(small.size, np.int64)
        F.unrice(rice_out[: rice_sizes[-1]], small.size, k, back)
        if not np.array_equal(np.minimum(np.diff(back, prepend=-1) - 1, 255), small):
            raise SystemExit("rice: decoding its bytes does not give the gap coder's gaps")
    pos = np.empty(n + 16, np.int64)
    if G._block_positions(flat[0], 0, flat[0].size, pos) != smalls[0].size:
        raise SystemExit("positions: not as many spikes as the gap coder found")

    pieces = {
        "read": (np.count_nonzero, words),
        "pack": (packer.pack, frames),
        "stream": (lambda w: K._pack_stream(w, stream), words),
        "count": (K.popcount, flat),
        "positions": (lambda c: G._block_positions(c, 0, c.size, pos), flat),
        "gap bytes": (gap_bytes, flat),
        "fused": (lambda w: F.pack_gap_bytes(w, stream, fused_small), words),
        "zstd": (zstd.encode, smalls),
        "code": (lambda c: codec.encode(c[None]), packed),
        "bitmap zstd": (zstd.encode, packed),
        "rice": (lambda c: F.rice(c, span, shape[-1], k, rice_out, block_pos), flat),
    }
    ms, over = _take_turns(pieces, args.passes)
    spikes = statistics.mean(s.size for s in smalls)
    bound = statistics.mean(shannon_bytes(n, s.size / n) for s in smalls)
    bitmap_ratio = statistics.mean(len(zstd.encode(c)) for c in packed) / bound
    code_ratio = statistics.mean(len(codec.encode(c[None])) for c in packed) / bound
    rice_ratio = statistics.mean(rice_sizes) / bound
    budget = (args.target - over["pack"]) * ms["read"]
    print(f"{shape} float32 at {args.rate:.1%}: {spikes:,.0f} spikes a frame; thread CPU per frame, "
          f"median of {args.passes} rounds, each piece one pass over {args.pool} frames, taking turns\n")
    for name, value in ms.items():
        print(f"  {name:12s} {value:6.3f} ms  {over[name]:5.2f}x read"
              + (f"  ({value * 1e6 / spikes:.2f} ns a spike)" if name in ("positions", "gap bytes") else ""))
    total = over["pack"] + over["code"]
    print(f"\npack + code: {total:.2f}x the read ({code_ratio:.3f}x the Shannon bound)")
    print(f"fused pack + gap bytes: {ms['fused'] - ms['stream']:+.3f} ms over the same packing loop alone "
          f"(the gap scan apart: {ms['gap bytes']:.3f} ms)")
    print(f"budget for coding within {args.target}x the read: {budget:.3f} ms a frame; taking the positions "
          f"alone costs {ms['positions']:.3f} ms, the entropy stage {ms['zstd']:.3f} ms; zstd of the bitmap "
          f"(no positions) {ms['bitmap zstd']:.3f} ms at {bitmap_ratio:.2f}x the bound")
    cheapest = over["pack"] + over["rice"]
    print(f"cheapest path (pack + rice, k={k}, {real_bits:,} real bits): {cheapest:.2f}x the read, "
          f"{rice_ratio:.3f}x the Shannon bound, before any chunk framing or checksum")
    if args.json:
        args.json.write_text(json.dumps({"shape": shape, "rate": args.rate, "spikes": spikes, "ms": ms,
                                         "over_read": over, "budget_ms": budget, "code_over_bound": code_ratio,
                                         "bitmap_zstd_over_bound": bitmap_ratio,
                                         "rice_k": k, "rice_over_bound": rice_ratio,
                                         "pack_rice_over_read": cheapest}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
