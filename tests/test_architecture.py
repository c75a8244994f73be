"""The package's import graph follows the data flow: no runtime cycle, no upward edge (tools/check_imports.py).

The checker is run on spikestore itself and on small synthetic packages built
under ``tmp_path``, so that each kind of violation is shown to be caught.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


@pytest.fixture(scope="module")
def check_imports() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_imports", TOOLS / "check_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _package(root: Path, files: dict[str, str]) -> Path:
    """A package ``pkg`` under ``root`` with the given modules (relative path -> source)."""
    package = root / "pkg"
    for name, source in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return package


def test_spikestore_has_no_runtime_cycle_and_no_upward_edge(check_imports):
    assert check_imports.problems() == []


def test_spikestore_has_no_cycle_even_through_type_checking_imports(check_imports):
    # Modules that name each other only for type hints still know each other: the read side's
    # segments, padded views and dask views reach their stream through small protocols instead.
    assert check_imports.typing_cycles() == []


def test_the_checker_finds_a_cycle_inside_a_package_through_a_function_import(check_imports, tmp_path):
    package = _package(tmp_path, {
        "sub/__init__.py": "",
        "sub/a.py": "from pkg.sub import b\n",
        "sub/b.py": "def f():\n    from . import a\n    return a\n",
        "sub/c.py": "from pkg.sub import a\n",  # depends on the cycle, is not part of it
    })
    modules, edges = check_imports.collect(package)
    found = check_imports.cycles(modules, edges)
    assert [(c.modules, c.runtime) for c in found] == [(("pkg.sub.a", "pkg.sub.b"), True)]
    assert {(e.source, e.target, e.kind) for e in found[0].edges} == {
        ("pkg.sub.a", "pkg.sub.b", "module"), ("pkg.sub.b", "pkg.sub.a", "function")}
    layers = {"pkg": 0}
    assert [line.split(":")[0] for line in check_imports.problems(package, layers)] == ["cycle"]
    assert "pkg.sub.a <-> pkg.sub.b" in check_imports.problems(package, layers)[0]


def test_a_cycle_only_through_type_checking_imports_is_reported_apart(check_imports, tmp_path):
    package = _package(tmp_path, {
        "a.py": "from __future__ import annotations\nfrom pkg import b\n",
        "b.py": """\
            from __future__ import annotations
            import typing
            if typing.TYPE_CHECKING:
                from pkg.a import Thing
            """,
    })
    assert check_imports.problems(package, {"pkg": 0}) == []
    typing_only = check_imports.typing_cycles(package)
    assert len(typing_only) == 1 and typing_only[0].startswith("typing-only cycle: pkg.a <-> pkg.b")


def test_the_checker_finds_an_upward_edge(check_imports, tmp_path):
    package = _package(tmp_path, {"low.py": "def f():\n    import pkg.high\n", "high.py": "import pkg.low\n"})
    found = check_imports.problems(package, {"pkg": 2, "pkg.low": 0, "pkg.high": 1})
    assert any(line.startswith("upward: pkg.low (layer 0) imports pkg.high (layer 1)") for line in found)
    assert any(line.startswith("cycle: pkg.high <-> pkg.low") for line in found)
