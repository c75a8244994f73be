#!/usr/bin/env python
"""Check spikestore's import graph: no cycles, no edge against the data flow.

The package is layered along the flow of DESIGN.md §2, lowest first::

    0  errors, _failures,          what everything may raise, how failures are classified,
       _atomic_files               write-then-replace of files
    1  _format                     names, documents, record layouts, dtypes
    2  codecs                      bit packing, spike/float codecs, checksums
    3  backends                    Zarr and HDF5 storage
    4  _read                       open, Run, Stream, Segment, views, verify
    5  _write                      Store, capture, writer, assembly
    6  analysis, plot, export, tensor_cache
    7  monitor                     SpikingJelly-compatible monitors (write + read)
    8  cli
    9  spikestore (the package's __init__: lazy public names)

A module may import from its own layer and the layers below it, never from a
layer above ("upward"). Every import counts, also those inside functions
(they run sooner or later); imports under ``if TYPE_CHECKING:`` count for
the layers, not for cycles. Cycles are checked among the imports that run
when a module is imported (module level), where they break imports; imports
inside functions are reported as cycles too when they close one, since each
still means two modules depend on each other.

Run ``python tools/check_imports.py`` (exit 1 on a violation); the tests run
it too. ``--graph`` prints every edge.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spikestore"

LAYERS: dict[str, int] = {
    "spikestore.errors": 0, "spikestore._failures": 0, "spikestore._atomic_files": 0,
    "spikestore._format": 1,
    "spikestore.codecs": 2,
    "spikestore.backends": 3,
    "spikestore._read": 4,
    "spikestore._write": 5,
    "spikestore.analysis": 6, "spikestore.plot": 6, "spikestore.export": 6, "spikestore.tensor_cache": 6,
    "spikestore.monitor": 7,
    "spikestore.cli": 8,
    "spikestore": 9,
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    kind: str  # "module" (runs at import), "function" (runs when called), "typing" (never runs)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer of ``module``: the longest entry of :data:`LAYERS` that is a prefix of it."""
    best = None
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rank)
    if best is None:
        raise SystemExit(f"{module} belongs to no layer: add it to LAYERS in {Path(__file__).name}")
    return best[1]


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _existing(name: str, modules: set[str]) -> str | None:
    """``name`` or its longest prefix that is a spikestore module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, source: str, is_package: bool, modules: set[str]) -> None:
        self.source, self.is_package, self.modules = source, is_package, modules
        self.edges: list[Edge] = []
        self._depth = 0  # inside a function
        self._typing = 0  # inside "if TYPE_CHECKING:"

    def _kind(self) -> str:
        return "typing" if self._typing else "function" if self._depth else "module"

    def _add(self, name: str, line: int) -> None:
        target = _existing(name, self.modules)
        if target is not None and target != self.source:
            self.edges.append(Edge(self.source, target, line, self._kind()))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        typing = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
            (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        self._typing += typing
        for child in node.body:
            self.visit(child)
        self._typing -= typing
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("spikestore"):
                self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.source, self.is_package, node)
        if not base.startswith("spikestore"):
            return
        for alias in node.names:  # "from pkg import module" imports the module
            full = f"{base}.{alias.name}"
            self._add(full if full in self.modules else base, node.lineno)


def collect() -> tuple[set[str], list[Edge]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    edges: list[Edge] = []
    for f in files:
        source = module_name(f)
        c = _Collector(source, f.name == "__init__.py", modules)
        c.visit(ast.parse(f.read_text(encoding="utf-8"), str(f)))
        edges += c.edges
    # Importing a module imports its packages' __init__ first; those run too.
    return modules, edges


def cycles(modules: set[str], edges: list[Edge], kinds: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.kind in kinds:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def problems() -> list[str]:
    """Every violation, one line each (empty when the graph is clean)."""
    modules, edges = collect()
    found = []
    for e in edges:
        if layer_of(e.target) > layer_of(e.source):
            found.append(f"upward: {e.source} (layer {layer_of(e.source)}) imports {e.target} "
                         f"(layer {layer_of(e.target)}) at line {e.line} ({e.kind} level)")
    for comp in cycles(modules, edges, {"module", "function"}):
        found.append("cycle: " + " <-> ".join(comp))
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graph", action="store_true", help="print every edge")
    args = p.parse_args()
    modules, edges = collect()
    if args.graph:
        for e in sorted(edges, key=lambda e: (e.source, e.target)):
            print(f"{e.source} -> {e.target} ({e.kind}, line {e.line})")
    found = problems()
    for line in found:
        print(line)
    print(f"{len(modules)} modules, {len(edges)} imports between them: "
          f"{'no cycles, no upward edges' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
