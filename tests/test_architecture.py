"""The package's import graph follows the data flow: no cycles, no upward edges (tools/check_imports.py)."""

from __future__ import annotations

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def test_the_import_graph_has_no_cycles_and_no_upward_edges():
    sys.path.insert(0, str(TOOLS))
    try:
        import check_imports
    finally:
        sys.path.remove(str(TOOLS))
    assert check_imports.problems() == []


def test_no_module_grows_past_about_400_lines():
    package = Path(__file__).resolve().parent.parent / "spikestore"
    sizes = {p.relative_to(package).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in package.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 420} == {}
