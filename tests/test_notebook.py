"""docs/notebook.ipynb runs against a fresh demo store, and its committed outputs are what it prints.

The notebook is made by ``tools/make_doc_images.py`` (its ``CELLS``): the test builds it from
there, runs it with nbclient as ``jupyter nbconvert --execute docs/notebook.ipynb`` (or ``jupyter
execute``) runs it in the repository, in a ``docs`` folder beside a ``runs/demo.zarr`` that is the
session's demo store (the store ``bash tools/demo.sh`` writes, fixture ``demo_store_dir``), and
compares it with the committed ``docs/notebook.ipynb``:

* the cells and their sources are the generator's;
* every code cell has the same kinds of outputs (stream, text, HTML, PNG), in order;
* the text ones (printed output and ``text/plain`` results) are equal after the
  normalisation of tests/test_docs_executed.py (addresses, sizes on disk within 2%,
  ``...`` in the committed output matching anything). HTML (xarray's has random ids)
  and images (bytes vary with matplotlib's version) are compared by kind only.

To regenerate the committed outputs (after changing ``CELLS``, the demo or the library)::

    SPIKESTORE_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/test_notebook.py

which writes the executed notebook to docs/notebook.ipynb instead of failing.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
from test_docs_executed import normalise, tolerate_sizes

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "notebook.ipynb"
UPDATE = os.environ.get("SPIKESTORE_UPDATE_DOCS") == "1"


def _generator():
    spec = importlib.util.spec_from_file_location("make_doc_images", ROOT / "tools" / "make_doc_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(cell) -> list[tuple[str, str | None]]:
    """``(kind, text or None)`` per output: the text of stream and text/plain outputs, kinds only for others."""
    found = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            kind = f"stream:{out['name']}"
            if found and found[-1][0] == kind:  # the kernel splits printed text where it flushes
                found[-1] = (kind, found[-1][1] + out["text"])
            else:
                found.append((kind, out["text"]))
        elif out["output_type"] in ("execute_result", "display_data"):
            data = out.get("data", {})
            kinds = sorted(data)
            found.append(("+".join(kinds), data["text/plain"] if kinds == ["text/plain"] or
                          ("text/plain" in data and "text/html" not in data and "image/png" not in data)
                          else None))
        else:
            found.append((out["output_type"], None))
    return found


@pytest.mark.slow  # the demo and a Jupyter kernel run in subprocesses
def test_the_notebook_runs_and_shows_what_it_prints(demo_store_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "runs").symlink_to(demo_store_dir / "runs")
    (tmp_path / "docs").mkdir()  # Jupyter runs a notebook in its own folder: the repository's docs/
    executed = _generator().build_notebook(None, execute_in=tmp_path / "docs")

    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("spikestore run" in h and "output/2" in h for h in html)          # the summary table
    assert any("xarray.Dataset" in h for h in html)                               # the lazy dataset
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5            # the plots
    assert not any(str(tmp_path) in str(o) or str(demo_store_dir) in str(o) for o in outputs)

    if UPDATE:
        nbformat.write(executed, NOTEBOOK)
        return
    committed = nbformat.read(NOTEBOOK, as_version=4)
    regenerate = "regenerate it: SPIKESTORE_UPDATE_DOCS=1 python -m pytest tests/test_notebook.py"
    assert [(c.cell_type, c.source) for c in committed.cells] == \
        [(c.cell_type, c.source) for c in executed.cells], f"docs/notebook.ipynb is not the generator's; {regenerate}"
    checker, problems = doctest.OutputChecker(), []
    for i, (old, new) in enumerate(zip(committed.cells, executed.cells, strict=True)):
        if new.cell_type != "code":
            continue
        want, got = _outputs(old), _outputs(new)
        if [k for k, _ in want] != [k for k, _ in got]:
            problems.append(f"cell {i}: outputs {[k for k, _ in got]}, the committed notebook shows "
                            f"{[k for k, _ in want]}")
            continue
        for (_, w), (_, g) in zip(want, got, strict=True):
            if w is None:
                continue
            w, g = normalise(w), normalise(g)
            g = tolerate_sizes(w, g)
            if not checker.check_output(w, g, doctest.ELLIPSIS):
                problems.append(f"cell {i}:\n" + checker.output_difference(doctest.Example("", w), g,
                                                                           doctest.ELLIPSIS | doctest.REPORT_UDIFF))
    assert not problems, f"docs/notebook.ipynb shows other outputs than it prints ({regenerate}):\n" + \
        "\n".join(problems)
