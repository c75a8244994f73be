"""The main job: train a real spiking network and record it to a store.

Trains a two-layer LIF network (SpikingJelly, multi-step mode, CPU) on
scikit-learn's handwritten digits (8x8 images shipped inside the package, so
nothing is downloaded), Poisson-encoded over ``T`` time steps. While it
trains, spikestore records, every step:

* every LIF layer's output spikes (``output/<layer>``),
* every LIF layer's membrane potential sequence (``v_seq/<layer>``),
* the gradient norm flowing into every LIF layer (``grad_input/<layer>``).

Then it reopens the store, prints what was recorded with a legend of the
table, and the next commands to try on the store it wrote.

Run ``bash tools/demo.sh`` (set-up included) or, in the venv,
``python tools/demo.py --epochs 3 --out runs/demo.zarr``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from spikingjelly.activation_based import encoding, functional, layer, neuron, surrogate
from tqdm import tqdm

import spikestore
from spikestore import monitor


def build_net(hidden: int) -> nn.Module:
    net = nn.Sequential(
        layer.Flatten(),
        layer.Linear(64, hidden),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), store_v_seq=True),
        layer.Linear(hidden, 10),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), store_v_seq=True),
    )
    functional.set_step_mode(net, "m")
    return net


def load_data(seed: int) -> tuple[torch.Tensor, ...]:
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)  # intensities in [0, 1]
    y = torch.tensor(digits.target)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return x_tr, x_te, y_tr, y_te


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int) -> float:
    enc = encoding.PoissonEncoder()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 256):
            xb = x[i:i + 256]
            out = net(torch.stack([enc(xb) for _ in range(T)])).mean(0)
            correct += int((out.argmax(1) == y[i:i + 256]).sum())
            functional.reset_net(net)
    return correct / len(x)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def legend(run: spikestore.Run) -> str:
    """What each column and mark of ``run.summary_table()`` means, with this run's own examples.

    The table is terse so that it fits a terminal; a first-time reader needs
    to know that ``(+1)`` is a second record shape (the last, smaller batch)
    and why a tiny stream can cost more than float32.
    """
    rows = run.summary()
    others = {r["stream"]: sorted({_shape(seg.shape) for seg in run[r["stream"]].segments
                                   if seg.shape != r["shape"]}) for r in rows if r["other_shapes"]}
    over = [r for r in rows if (r["ratio_to_float32"] or 0) > 1]
    lines = [
        "What the columns mean:",
        "  records          records committed to disk (here one per layer and training step)",
        "  steps            first..last training step of those records (store.set_step)",
        "  record shape     shape of one record: T x batch x neurons for spikes and v_seq, 'scalar' for",
        "                   a gradient norm; the largest shape when there are several",
    ]
    if others:
        key, shapes = next(iter(others.items()))
        lines.append("  (+k)             k other record shapes, each kept in segments of its own; "
                     f"{key} also holds {', '.join(shapes)}")
        lines.append("                   (the last batch of each epoch is smaller; reading pads it to one array)")
    lines += [
        "  dtype            the records' dtype in PyTorch, which reading gives back",
        "  encoding         bits: spikes (only 0s and 1s), packed 8 to a byte; raw: the values, compressed",
        "  on disk          everything the stream occupies: records, step/call/time index, metadata",
        "  data vs float32  the stream's record arrays on disk (chunks and their array metadata, not the",
        "                   index) over the same records held as float32 tensors, as SpikingJelly's",
        "                   in-memory monitors hold them: under 100% is smaller",
    ]
    if over:
        r = over[0]
        lines.append(f"                   (over 100% only for tiny records: {r['stream']} holds one "
                     f"{_shape(r['shape'])} per step, and its")
        lines.append(f"                   array's fixed metadata outweighs those few bytes: "
                     f"{100 * r['ratio_to_float32']:.0f}%)")
    return "\n".join(lines)


def next_steps(run: spikestore.Run, out: Path) -> str:
    """Commands that work on the store just written, and the docs to read next."""
    spikes = next((k for k in run.streams if k.startswith("output/")), run.streams[0])
    volts = next((k for k in run.streams if k.startswith("v_seq/")), None)
    store = shlex.quote(str(out))

    def beside(name: str) -> str:
        return shlex.quote(str(out.with_name(f"{out.stem}_{name}")))

    cmds = [f"spikestore info {store}",
            f"spikestore plot {store} --kind raster --stream {spikes} --out {beside('raster.png')}"]
    if volts is not None:
        cmds.append(f"spikestore plot {store} --kind voltage --stream {volts} --out {beside('voltage.png')}")
    cmds += [f"spikestore plot {store} --kind rates --out {beside('rates.png')}",
             f"spikestore plot {store} --kind grad-norms --out {beside('grad_norms.png')}",
             f"spikestore export {store} {beside('spikes.npz')} --streams 'output/*'",
             f"spikestore export {store} {shlex.quote(str(out.with_suffix('.nwb')))}"]
    return "\n".join([
        "Next, try these on the store (in the venv: . .venv/bin/activate):",
        *(f"  {c}" for c in cmds),
        "Read: docs/tutorial.md (recording with monitors), docs/reading.md (reading, analysis, plots),",
        "      docs/cli.md (these commands and their options).",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo.zarr", help="store to write (.zarr, or .h5 for HDF5)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--T", type=int, default=8, help="time steps per sample")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    x_tr, x_te, y_tr, y_te = load_data(args.seed)
    net = build_net(args.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    enc = encoding.PoissonEncoder()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"task": "sklearn load_digits, Poisson-encoded", "T": args.T, "batch": args.batch,
            "epochs": args.epochs, "lr": args.lr, "hidden": args.hidden, "seed": args.seed,
            "network": str(net)}
    store = spikestore.Store(out, mode="w", overwrite=True, metadata=meta)
    monitors = [
        monitor.OutputMonitor(net, neuron.LIFNode, store=store),
        monitor.AttributeMonitor("v_seq", False, net, neuron.LIFNode, store=store),
        monitor.GradInputMonitor(net, neuron.LIFNode, function_on_grad_input=torch.norm, store=store),
    ]

    step = 0
    t0 = time.perf_counter()
    steps_per_epoch = -(-len(x_tr) // args.batch)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x_tr))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="step",
                   disable=not sys.stderr.isatty())
        losses = []
        for b in bar:
            idx = perm[b * args.batch:(b + 1) * args.batch]
            store.set_step(step)
            x_seq = torch.stack([enc(x_tr[idx]) for _ in range(args.T)])  # [T, N, 8, 8]
            rate = net(x_seq).mean(0)
            loss = F.cross_entropy(rate * 10, y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            functional.reset_net(net)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            step += 1
        for m in monitors:  # record training only
            m.disable()
        acc = evaluate(net, x_te, y_te, args.T)
        for m in monitors:
            m.enable()
        print(f"epoch {epoch + 1}: train loss {np.mean(losses):.3f}, test accuracy {acc:.1%}")

    for m in monitors:
        m.remove_hooks()
    store.close()
    elapsed = time.perf_counter() - t0

    run = spikestore.open(out)
    print(f"\nRecorded {step} training steps in {elapsed:.1f} s to {out}:\n")
    print(run.summary_table())
    print()
    print(legend(run))
    s = run[f"output/{run['output/2'].layer}"] if "output/2" in run else None
    if s is not None:
        last = s[len(s) - 1]
        print(f"\nExample: run['output/2'][-1] is a {last.dtype} array of shape {last.shape} "
              f"(T, batch, neurons) recorded at step {int(s.steps[-1])}; "
              f"firing rate {last.mean():.3f}.")
    print("Open it in Python with:  import spikestore; run = spikestore.open("
          f"{str(out)!r})")
    print()
    print(next_steps(run, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
