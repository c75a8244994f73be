"""docs/notebook.ipynb and the python blocks of docs/reading.md run against a fresh demo store."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A folder holding runs/demo.zarr, written by ``tools/demo.py --epochs 1``."""
    folder = tmp_path_factory.mktemp("docs")
    store = folder / "runs" / "demo.zarr"
    subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--epochs", "1", "--out", str(store)],
                   check=True, capture_output=True, timeout=600)
    return folder


def test_the_example_notebook_executes(demo_dir, monkeypatch):
    monkeypatch.setenv("SPIKESTORE_DEMO_STORE", str(demo_dir / "runs" / "demo.zarr"))
    nb = nbformat.read(ROOT / "docs" / "notebook.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "docs")}}).execute()  # raises on any error
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("spikestore run" in h and "output/2" in h for h in html)          # the summary table
    assert any("xarray.Dataset" in h for h in html)                               # the lazy dataset
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5            # the plots


def test_the_reading_guide_runs(demo_dir, monkeypatch):
    """Every ```python block of docs/reading.md, in order, in one namespace."""
    import matplotlib.pyplot as plt

    monkeypatch.chdir(demo_dir)
    text = (ROOT / "docs" / "reading.md").read_text()
    namespace: dict[str, object] = {}
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text[:match.start()].count("\n") + 2
        code = "\n" * (line - 1) + match.group(1)  # tracebacks point at the markdown lines
        exec(compile(code, str(ROOT / "docs" / "reading.md"), "exec"), namespace)  # noqa: S102
    plt.close("all")
    assert namespace["run"].streams and len(namespace["spikes"]) == 5


def test_the_notebook_is_what_the_generator_writes(tmp_path):
    """docs/notebook.ipynb comes from tools/make_doc_images.py: edit the generator, not the file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_doc_images", ROOT / "tools" / "make_doc_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_notebook(tmp_path / "notebook.ipynb")
    assert (tmp_path / "notebook.ipynb").read_text() == (ROOT / "docs" / "notebook.ipynb").read_text()
