"""Spike codec benchmark: size against the Shannon bound, speed, GIL behaviour.

For i.i.d. Bernoulli spikes at several firing rates, each record goes
through ``spikestore.Store`` (the real write path) and the bytes on disk of
the spike data are compared with the Shannon bound ``n * H(p) / 8``. Next to
it, the same packed chunks are compressed by the two baselines:
``np.packbits`` + zstd (level 1) and the tutorial's ``zlib.compress`` of the
packed bytes. Speeds are encode/decode spikes per second of one core.

``--real`` measures the spikes of three trained networks, per layer: the
demo's (tools/demo.py, multi-step records ``(time, batch, neuron)``; an
existing store with ``--demo PATH``), the reference workload's LIF layers
(tools/workload.py, convolutional, 10 steps) and a step-by-step MLP on the
same digits (64-384-10, SpikingJelly's single-step mode: one record
``(batch, neuron)`` per time step). Each layer's stored chunks are coded
again with and without the neurons mode (mode 4; a flat buffer never takes
it, which is what the codec did without it), and their bytes compared with
three entropy bounds (spikestore/codecs/_bounds.py): i.i.d. at the layer's
rate, a rate per neuron, and a rate per neuron given its previous time step.
Speeds are values (bits) per second of one core, medians of ``--repeats``
alternated runs.

The GIL column is the speed of a pure-Python thread counting while the codec
runs, relative to the same thread running alone: near 1.0 means the codec
released the GIL and the training thread would keep running.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import Zstd

import spikestore
from spikestore.codecs import _packing as packing
from spikestore.codecs._spikes import MODES, NEURONS_FROM_LEVEL, decode_spikes, encode_spikes

RATES = (0.5, 0.2, 0.05, 0.01, 0.002)


def shannon_bytes(n: int, p: float) -> float:
    if p <= 0 or p >= 1:
        return 0.0  # a silent (or saturated) layer carries no information
    return n * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def gil_ratio(fn, seconds: float = 0.4) -> float:
    """Speed of a counting Python thread while ``fn`` runs in a loop, over its speed alone."""
    def count(stop: threading.Event, out: list[int]) -> None:
        n = 0
        while not stop.is_set():
            n += 1
        out.append(n)

    def rate(busy: bool) -> float:
        stop, out = threading.Event(), []
        t = threading.Thread(target=count, args=(stop, out))
        t0 = time.perf_counter()
        t.start()
        while time.perf_counter() - t0 < seconds:
            fn() if busy else time.sleep(0.01)
        stop.set()
        t.join()
        return out[0] / (time.perf_counter() - t0)

    alone = rate(False)
    return rate(True) / alone


def stream_bytes(path: Path, key: str) -> int:
    # The segments' stored chunks (with each array's small zarr.json, negligible at these sizes).
    return sum(seg.nbytes() for seg in spikestore.open(path)[key].segments)


def _codec_row(chunk: np.ndarray, packed_all: list[np.ndarray], bound: float, repeats: int) -> dict[str, Any]:
    """Ratios and speeds of spikestore's codec, zstd and zlib on one packed chunk (a row of the table)."""
    chunk_spikes = chunk.size * 8
    enc = encode_spikes(chunk)
    zstd = Zstd(level=1)
    z_enc = zstd.encode(chunk)
    zl_enc = zlib.compress(chunk.tobytes())
    return {
        "mode": MODES[enc[1]],
        "zstd_ratio": sum(len(zstd.encode(c)) for c in packed_all) / bound,
        "zlib_ratio": sum(len(zlib.compress(c.tobytes())) for c in packed_all) / bound,
        "ours_enc": chunk_spikes / median_time(lambda: encode_spikes(chunk), repeats),
        # A flat buffer is never coded neuron by neuron (mode 4): the encoder's speed without that mode.
        "ours_enc_flat": chunk_spikes / median_time(lambda: encode_spikes(chunk.reshape(-1)), repeats),
        "ours_dec": chunk_spikes / median_time(lambda: decode_spikes(enc), repeats),
        "zstd_enc": chunk_spikes / median_time(lambda: zstd.encode(chunk), repeats),
        "zstd_dec": chunk_spikes / median_time(lambda: zstd.decode(z_enc), repeats),
        "zlib_enc": chunk_spikes / median_time(lambda: zlib.compress(chunk.tobytes()), repeats),
        "zlib_dec": chunk_spikes / median_time(lambda: zlib.decompress(zl_enc), repeats),
        "gil_ours": gil_ratio(lambda: encode_spikes(chunk)),
        "gil_zstd": gil_ratio(lambda: zstd.encode(chunk)),
    }


def print_iid(rows: list[dict[str, Any]]) -> None:
    print("i.i.d. Bernoulli spikes, bytes on disk over the Shannon bound n*H(p)/8, and speed per core")
    print(f"{'p':>6} {'spikestore':>10} {'mode':>12} {'packbits+zstd':>14} {'zlib':>7}   "
          f"{'enc G/s':>8} {'no mode 4':>9} {'dec G/s':>8} {'zstd enc':>9} {'zstd dec':>9} {'zlib enc':>9}  "
          f"{'GIL ours':>8} {'GIL zstd':>8}")
    for r in rows:
        print(f"{r['p']:>6} {r['ours_ratio']:>10.3f} {r['mode']:>12} {r['zstd_ratio']:>14.3f} "
              f"{r['zlib_ratio']:>7.3f}   "
              f"{r['ours_enc'] / 1e9:>8.2f} {r['ours_enc_flat'] / 1e9:>9.2f} {r['ours_dec'] / 1e9:>8.2f} "
              f"{r['zstd_enc'] / 1e9:>9.2f} "
              f"{r['zstd_dec'] / 1e9:>9.2f} {r['zlib_enc'] / 1e9:>9.2f}  {r['gil_ours']:>8.2f} {r['gil_zstd']:>8.2f}")


def _record_demo(path: Path) -> None:
    """The demo's store: tools/demo.py, 3 epochs (a minute or two of CPU)."""
    import demo  # type: ignore[import-not-found]

    demo.main(["--out", str(path)])


def _record_workload(path: Path) -> None:
    """The reference workload's LIF outputs, 10 training steps."""
    from spikingjelly.activation_based import neuron
    from workload import build_net, make_batches, train_steps  # type: ignore[import-not-found]

    from spikestore import monitor

    net, opt = build_net()
    with spikestore.Store(path) as store:
        mon = monitor.OutputMonitor(net, neuron.LIFNode, store=store)
        train_steps(net, opt, make_batches(10, 0), on_step=store.set_step)
        mon.remove_hooks()


def _record_step_mlp(path: Path, epochs: int = 2, T: int = 8, batch: int = 64) -> None:
    """A 64-384-10 LIF MLP on the digits in single-step mode: one record per layer and time step."""
    import torch
    import torch.nn.functional as F
    from demo import load_data  # type: ignore[import-not-found]
    from spikingjelly.activation_based import encoding, functional, layer, neuron, surrogate

    from spikestore import monitor

    torch.manual_seed(0)
    x_tr, _, y_tr, _ = load_data(0)
    net = torch.nn.Sequential(
        layer.Flatten(), layer.Linear(64, 384), neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
        layer.Linear(384, 10), neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    enc = encoding.PoissonEncoder()
    with spikestore.Store(path) as store:
        mon = monitor.OutputMonitor(net, neuron.LIFNode, store=store)
        step = 0
        for _ in range(epochs):
            perm = torch.randperm(len(x_tr))
            for b in range(0, len(x_tr), batch):
                idx = perm[b:b + batch]
                store.set_step(step)
                rate = sum(net(enc(x_tr[idx])) for _ in range(T)) / T
                loss = F.cross_entropy(rate * 10, y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                functional.reset_net(net)
                step += 1
        mon.remove_hooks()


def _chunks(s: Any) -> list[np.ndarray]:
    """The layer's stored chunks as the writer codes them: packed records ``[chunk_records, ...]``."""
    out = []
    for seg in s.segments:
        if seg.encoding != "bits":
            continue
        recs = [np.packbits(s[seg.start + i] != 0, axis=-1, bitorder="little") for i in range(seg.count)]
        for lo in range(0, seg.count, seg.chunk_records):
            chunk = np.zeros((seg.chunk_records, *recs[0].shape), np.uint8)
            part = recs[lo:lo + seg.chunk_records]
            chunk[:len(part)] = part
            out.append(chunk)
    return out


def _layer_row(net: str, s: Any, repeats: int) -> dict[str, Any] | None:
    """Bytes over the three bounds, before (modes 0-3) and after (with mode 4), and speeds, of one layer."""
    from spikestore.codecs._bounds import SpikeCounts

    seg0 = next((seg for seg in s.segments if seg.encoding == "bits"), None)
    if seg0 is None:
        return None
    row_bits = seg0.doc["codec"].get("row_bits")
    counts = SpikeCounts(s.dims)
    for i in range(len(s)):
        counts.add(s[i])
    chunks = _chunks(s)
    before = [encode_spikes(c.reshape(-1), row_bits=row_bits) for c in chunks]
    after = [encode_spikes(c, NEURONS_FROM_LEVEL, row_bits=row_bits) for c in chunks]
    bits = sum(c.size * 8 for c in chunks)
    times: dict[str, list[float]] = {"enc_before": [], "enc_after": [], "dec_before": [], "dec_after": []}
    for _ in range(repeats):  # alternated, so both see the same machine
        for name, fn in (("enc_before", lambda: [encode_spikes(c.reshape(-1), row_bits=row_bits) for c in chunks]),
                         ("enc_after", lambda: [encode_spikes(c, NEURONS_FROM_LEVEL, row_bits=row_bits)
                                                for c in chunks]),
                         ("dec_before", lambda: [decode_spikes(e) for e in before]),
                         ("dec_after", lambda: [decode_spikes(e) for e in after])):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    neuron_coded = [c for c, e in zip(chunks, after, strict=True) if e[1] == MODES.index("neurons")]
    gil = gil_ratio(lambda: encode_spikes(neuron_coded[0], row_bits=row_bits)) if neuron_coded else None
    bounds = counts.bounds()
    b_before, b_after = 8 * sum(map(len, before)), 8 * sum(map(len, after))
    return {
        "net": net, "stream": s.key, "shape": list(seg0.shape), "values": counts.total,
        "rate": counts.spikes / max(1, counts.total), "bytes_before": b_before // 8, "bytes_after": b_after // 8,
        "modes_after": sorted({MODES[e[1] & 0x7F] for e in after}), "gil_neurons": gil,
        **{f"bound_{k}": v / 8 for k, v in bounds.items()},
        **{f"before_over_{k}": b_before / v if v else None for k, v in bounds.items()},
        **{f"after_over_{k}": b_after / v if v else None for k, v in bounds.items()},
        **{f"{k}_gbps": bits / float(np.median(v)) / 1e9 for k, v in times.items()},
    }


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"  # (a silent layer has no bound to divide by)


def real_layers(tmp: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per layer of three trained networks: bytes over the bounds before and after, and speeds."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    nets = {"demo": Path(args.demo) if args.demo else tmp / "demo.zarr", "workload": tmp / "workload.zarr",
            "step MLP": tmp / "step-mlp.zarr"}
    if not args.demo:
        _record_demo(nets["demo"])
    _record_workload(nets["workload"])
    _record_step_mlp(nets["step MLP"])
    rows = []
    for net, path in nets.items():
        run = spikestore.open(path)
        for key in run.streams:
            if key.startswith("output/"):
                row = _layer_row(net, run[key], args.repeats)
                if row is not None:
                    rows.append(row)
    print("\ntrained networks, per layer: codec bytes over each bound (i.i.d. at the layer's rate, "
          "per neuron, per neuron given its previous step), before (modes 0-3) -> after (with mode 4), "
          "speed in G values/s of one core, and the GIL ratio of a counting thread beside mode 4's encoder")
    head = (f"{'network':>9} {'layer':>11} {'rate':>6} {'over iid':>13} {'over neuron':>13} "
            f"{'over cond.':>13} {'enc G/s':>11} {'dec G/s':>11} {'GIL 4':>6}  modes after")
    print(head)
    for r in rows:
        print(f"{r['net']:>9} {r['stream']:>11} {r['rate']:>6.3f} "
              + " ".join(f"{_ratio(r[f'before_over_{k}']):>6}>{_ratio(r[f'after_over_{k}']):<6}"
                         for k in ("iid", "neuron", "conditional"))
              + f" {r['enc_before_gbps']:>5.2f}>{r['enc_after_gbps']:<5.2f} {r['dec_before_gbps']:>5.2f}>"
              f"{r['dec_after_gbps']:<5.2f} {_ratio(r['gil_neurons']):>6}  {','.join(r['modes_after'])}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spikes", type=int, default=1 << 25, help="spikes per rate (default 33.5 M)")
    ap.add_argument("--record", type=int, default=1 << 20, help="spikes per record (default 1 M)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--real", action="store_true", help="also measure three trained networks' spikes")
    ap.add_argument("--demo", default=None, help="with --real: the demo's store (default: train one, 3 epochs)")
    ap.add_argument("--iid", action=argparse.BooleanOptionalAction, default=True,
                    help="measure i.i.d. spikes (default); --no-iid with --real measures only the networks")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    packing.load_kernels()  # before timing: the first encode would otherwise load them
    tmp = Path(tempfile.mkdtemp(prefix="spikestore-codec-"))
    rng = np.random.default_rng(0)
    rows = []
    for p in RATES if args.iid else ():
        n_rec = max(1, args.spikes // args.record)
        recs = [(rng.random(args.record) < p).astype(np.float32).reshape(-1, 1024) for _ in range(n_rec)]
        ones = sum(int(r.sum()) for r in recs)
        n = n_rec * args.record
        bound = shannon_bytes(n, ones / n)
        path = tmp / f"p{p}.zarr"
        with spikestore.Store(path) as store:
            for r in recs:
                store.append("output/x", r)
        ours = stream_bytes(path, "output/x")
        seg = spikestore.open(path)["output/x"].segments[0]
        chunk = np.packbits(np.stack(recs[: seg.chunk_records]).astype(bool), axis=-1, bitorder="little")
        packed_all = [np.packbits(r.astype(bool), axis=-1, bitorder="little") for r in recs]
        rows.append({"p": p, "ours_ratio": ours / bound, **_codec_row(chunk, packed_all, bound, args.repeats)})
    if rows:
        print_iid(rows)
    result: dict[str, Any] = {"iid": rows}


    if args.real:
        result["real"] = real_layers(tmp, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
