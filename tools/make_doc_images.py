"""Draw the figures of docs/reading.md and write the example notebook docs/notebook.ipynb.

Figures (docs/images/*.png) come from a store written by ``tools/demo.py``
with its defaults, as ``bash tools/demo.sh`` runs it (made in a temporary folder
unless ``--store`` names one)
and from the tutorial's surrogate-alpha sweep (section 6.2 of
docs/tutorial.md), re-run here into a temporary store::

    python tools/make_doc_images.py                 # figures + notebook
    python tools/make_doc_images.py --store runs/demo.zarr
    python tools/make_doc_images.py --images-only   # figures only

The notebook's cells are ``CELLS`` below: edit them here, not the notebook.
Its outputs come from running it against a demo store in a folder that holds
``runs/demo.zarr`` (so they name no machine path). ``tests/test_notebook.py``
runs it against a fresh demo store and checks that the committed outputs are
what it prints; to regenerate them, run that test with
``SPIKESTORE_UPDATE_DOCS=1`` (or ``python tools/make_doc_images.py
--notebook-only``)::

    SPIKESTORE_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/test_notebook.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MPLBACKEND", "Agg")


def demo_store(folder: Path) -> Path:
    """``runs/demo.zarr`` in ``folder``, as ``bash tools/demo.sh`` writes it: ``tools/demo.py`` with no arguments."""
    subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py")], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    return folder / "runs" / "demo.zarr"


def alpha_store(folder: Path) -> Path:
    """The tutorial's experiment: ten IF layers, the surrogate's alpha swept, one step per alpha."""
    import torch
    from spikingjelly.activation_based import functional, layer, neuron, surrogate
    from torch import nn

    import spikestore
    from spikestore import monitor

    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(10) for m in (layer.Linear(8, 8), neuron.IFNode())])
    functional.set_step_mode(net, "m")
    x_seq = torch.rand([4, 1, 8])
    alphas = [0.1, 0.5, 2, 4, 8]
    path = folder / "alpha.zarr"
    store = spikestore.Store(path, mode="w", metadata={"alphas": alphas})
    mon = monitor.GradInputMonitor(net, neuron.IFNode, function_on_grad_input=torch.norm, store=store)
    for step, alpha in enumerate(alphas):
        store.set_step(step)
        for m in net.modules():
            if isinstance(m, surrogate.Sigmoid):
                m.alpha = alpha
        net(x_seq).sum().backward()
        functional.reset_net(net)
        for p in net.parameters():
            p.grad.zero_()
        mon.records.clear()
    mon.close()
    store.close()
    return path


def draw(demo: Path, alpha: Path, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    import spikestore
    from spikestore import plot

    out.mkdir(parents=True, exist_ok=True)
    run, sweep = spikestore.open(demo), spikestore.open(alpha)
    spikes = run["output/2"][plot.full_batch_record(run["output/2"])][:, 0]  # [time, neuron] of sample 0
    traced = [k for k in range(spikes.shape[1]) if 1 <= spikes[:, k].sum() <= 3][:4]  # neurons that spike a little
    figures = {  # raster and traces: the last record with a full batch, as without a record given
        "raster.png": lambda: plot.raster(run["output/2"], sample=0),
        "firing_rate_heatmap.png": lambda: plot.firing_rate_heatmap(run),
        "grad_norms.png": lambda: plot.grad_norms(run),
        "grad_norms_alpha.png": lambda: plot.grad_norms(sweep, sweep="alphas", name="alpha"),
        "voltage_traces.png": lambda: plot.voltage_traces(run["v_seq/2"], neurons=traced, threshold=1.0),
    }
    written = []
    for name, make in figures.items():
        ax = make()
        ax.figure.savefig(out / name, dpi=100)
        plt.close(ax.figure)
        written.append(out / name)
    run.close()
    sweep.close()
    return written


CELLS = [
    ("markdown", """# Reading a spikestore run in a notebook

This notebook opens `runs/demo.zarr`, the store written by the demo (`bash tools/demo.sh`, which runs
`python tools/demo.py` with its defaults: it trains a small LIF network on sklearn's digits for three epochs
and records every layer's spikes, membrane potentials and input-gradient norms), then looks at it through
the stream views, xarray, and `spikestore.analysis` / `spikestore.plot`. Run in the repository's root or in
`docs/` (where Jupyter and `jupyter nbconvert --to notebook --execute docs/notebook.ipynb` run it), it finds
that store and prints what is shown here.
Set `SPIKESTORE_DEMO_STORE` to read another store. See `docs/reading.md` for the guide."""),
    ("code", """%matplotlib inline
import os
from pathlib import Path

import numpy as np
import xarray as xr

import spikestore
from spikestore import analysis, plot

path = Path(os.environ.get("SPIKESTORE_DEMO_STORE", "runs/demo.zarr"))
if not path.exists() and (Path("..") / path).exists():  # opened from docs/: work in the repository's root
    os.chdir("..")
run = spikestore.open(path)  # reads the root document only
run"""),
    ("markdown", "Streams are `quantity/layer`; opening one reads its JSON document, not its data."),
    ("code", """print(run.quantities, run.layers)
print(run.metadata["task"], "T =", run.metadata["T"])
s = run["output/2"]
print(s, s.dims)
print(len(s), s[0].shape, s[0].dtype, "steps", s.steps[:5], "...")
last_full = s.segments[0].stop - 1
print("step 3 is", s.sel(step=3).shape, "; firing rate at the last step:", s[-1].mean())"""),
    ("markdown", "## Plots\n\nA raster of one sample of one record, and the firing rate of every layer at every step:"),
    ("code", "plot.raster(s, last_full, sample=0);"),
    ("code", "plot.firing_rate_heatmap(run);"),
    ("code", "plot.voltage_traces(run['v_seq/2'], last_full, neurons=[0, 1, 2, 5], threshold=1.0);"),
    ("code", "plot.grad_norms(run);"),
    ("markdown", """## xarray and dask

`xarray.open_dataset(path, engine="spikestore")` gives one lazy variable per stream, `"<quantity>/<layer>"`.
The last, smaller batch of each epoch is padded along the batch axis (NaN for potentials, 0 for spikes), and
each record's real batch size is the coordinate `"<stream>:batch_size"`. Nothing is read until values are
asked for."""),
    ("code", """ds = xr.open_dataset(path, engine="spikestore", chunks={})
ds"""),
    ("code", """\
v = run["v_seq/2"].to_xarray()   # one array: record, time, batch, neuron; step, batch_size are coordinates
print(dict(v.sizes), v.batch_size.values[-3:])
mean_v = v.mean(("batch", "neuron")).compute()   # skips the NaN padding of each epoch's last record
mean_v.swap_dims(record="step").plot(x="time", hue="step", add_legend=False);"""),
    ("markdown", "`xarray.open_datatree` gives the same variables as a tree: one node per quantity, then per layer."),
    ("code", """tree = xr.open_datatree(path, engine="spikestore")
print([node.path for node in tree.subtree])"""),
    ("markdown", "## Analysis\n\nEach function makes one bounded-memory pass over the stored chunks."),
    ("code", """print(analysis.firing_rate(run, per="layer").to_series())
rates = analysis.firing_rate(s)            # per neuron
print("most active neurons of layer 2:", np.argsort(rates)[-5:][::-1])
print(analysis.inter_spike_intervals(s).to_series())
analysis.population_rate(s).mean("record").to_series()"""),
]


def build_notebook(path: Path, execute_in: Path | None = None):
    """Write the notebook of ``CELLS`` to ``path`` (``None``: only return it).

    With ``execute_in``, a folder holding ``runs/demo.zarr`` (or a folder beside it, as
    ``docs/`` is in the repository), the notebook is run there first and keeps its outputs.
    Returns the ``nbformat`` notebook.
    """
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, text in CELLS:
        nb.cells.append(nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: regenerating gives the same file
    if execute_in is not None:
        from nbclient import NotebookClient

        env = os.environ.pop("SPIKESTORE_DEMO_STORE", None)  # the notebook reads runs/demo.zarr
        try:
            NotebookClient(nb, timeout=300, kernel_name="python3", record_timing=False,
                           resources={"metadata": {"path": str(execute_in)}}).execute()  # raises on any error
        finally:
            if env is not None:
                os.environ["SPIKESTORE_DEMO_STORE"] = env
        nb.metadata.pop("language_info", None)  # the kernel's Python version: not the notebook's business
    if path is not None:
        nbformat.write(nb, path)
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, help="demo store to draw from (default: run the demo into a temp dir)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--notebook", type=Path, default=ROOT / "docs" / "notebook.ipynb")
    ap.add_argument("--notebook-only", action="store_true", help="write the notebook only, not the figures")
    ap.add_argument("--images-only", action="store_true", help="write the figures only, not the notebook")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        demo = args.store.resolve() if args.store else demo_store(Path(tmp))
        if not args.notebook_only:
            for p in draw(demo, alpha_store(Path(tmp)), args.out):
                print("wrote", p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
        if args.images_only:
            return 0
        folder = Path(tmp) / "notebook"  # runs/demo.zarr there, whatever the store's own path
        (folder / "runs").mkdir(parents=True)
        (folder / "runs" / "demo.zarr").symlink_to(demo)
        build_notebook(args.notebook, folder)
        print("wrote", args.notebook)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
