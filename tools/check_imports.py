#!/usr/bin/env python
"""Check spikestore's import graph: no import cycle, no edge against the data flow.

``LAYERS`` gives each package of spikestore its layer along the flow of data,
lowest first: errors and file helpers, the format, codecs, backends, the read
side, the write side, analysis/plot/export, monitors, the CLI, and the
package's ``__init__`` (its lazy public names).

Layers. A module may import from its own layer and the layers below it, never
from a layer above ("upward"). Every import counts: at module level, inside
functions (they run sooner or later) and under ``if TYPE_CHECKING:``.

Cycles. Every module is a node, inside a package as well as across packages.
A *runtime cycle* is a cycle among imports that run: at module level (where a
cycle breaks imports) or inside functions (where it still means two modules
depend on each other). A *typing cycle* exists only through imports under
``if TYPE_CHECKING:``: it never runs, but it is reported separately, since it
still means the modules know each other. Each cycle is reported as its
strongly connected component with the imports inside it.

Run ``python tools/check_imports.py`` (exit 1 on an upward edge or a runtime
cycle; ``--strict-typing`` fails on typing cycles too); tests/test_architecture.py
runs it. ``--graph`` prints every edge.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spikestore"

LAYERS: dict[str, int] = {
    "spikestore.errors": 0, "spikestore._failures": 0, "spikestore._atomic_files": 0,
    "spikestore._format": 1,
    "spikestore.codecs": 2,
    "spikestore.backends": 3,
    "spikestore._read": 4, "spikestore._integrations": 4, "spikestore._tools": 4,
    "spikestore._write": 5,
    "spikestore.analysis": 6, "spikestore.plot": 6, "spikestore.export": 6, "spikestore.tensor_cache": 6,
    "spikestore.live": 6,
    "spikestore.monitor": 7,
    "spikestore.cli": 8,
    "spikestore": 9,
}

RUNTIME = frozenset({"module", "function"})
EVERY = frozenset({"module", "function", "typing"})


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    kind: str  # "module" (runs at import), "function" (runs when called), "typing" (never runs)


@dataclass(frozen=True)
class Cycle:
    """A strongly connected component of the import graph: every module in it reaches every other."""

    modules: tuple[str, ...]
    edges: tuple[Edge, ...]  # the imports between its modules
    runtime: bool  # formed by imports that run; False: only through "if TYPE_CHECKING:" imports

    def describe(self) -> str:
        kind = "cycle" if self.runtime else "typing-only cycle"
        inner = "; ".join(f"{e.source} -> {e.target} (line {e.line}, {e.kind})" for e in self.edges)
        return f"{kind}: {' <-> '.join(self.modules)} [{inner}]"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str, layers: Mapping[str, int] = LAYERS) -> int:
    """The layer of ``module``: the longest entry of ``layers`` that is a prefix of it."""
    best: tuple[str, int] | None = None
    for prefix, rank in layers.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
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
    """``name`` or its longest prefix that is a module of the package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, source: str, is_package: bool, modules: set[str], top: str) -> None:
        self.source, self.is_package, self.modules, self.top = source, is_package, modules, top
        self.edges: list[Edge] = []
        self._depth = 0  # inside a function
        self._typing = 0  # inside "if TYPE_CHECKING:"

    def _ours(self, name: str) -> bool:
        return name == self.top or name.startswith(self.top + ".")

    def _kind(self) -> str:
        return "typing" if self._typing else "function" if self._depth else "module"

    def _add(self, name: str, line: int) -> None:
        target = _existing(name, self.modules)
        if target is not None and target != self.source:
            self.edges.append(Edge(self.source, target, line, self._kind()))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        typing = _is_type_checking(node.test)
        self._typing += typing
        for child in node.body:
            self.visit(child)
        self._typing -= typing
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._ours(alias.name):
                self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.source, self.is_package, node)
        if not self._ours(base):
            return
        for alias in node.names:  # "from pkg import module" imports the module
            full = f"{base}.{alias.name}"
            self._add(full if full in self.modules else base, node.lineno)


def collect(package: Path = PACKAGE) -> tuple[set[str], list[Edge]]:
    """Every module of ``package`` and every import between two of them (one edge per import statement and target)."""
    files = sorted(package.rglob("*.py"))
    modules = {module_name(f, package) for f in files}
    edges: set[Edge] = set()
    for f in files:
        c = _Collector(module_name(f, package), f.name == "__init__.py", modules, package.name)
        c.visit(ast.parse(f.read_text(encoding="utf-8"), str(f)))
        edges.update(c.edges)
    return modules, sorted(edges, key=lambda e: (e.source, e.target, e.line, e.kind))


def components(modules: set[str], edges: list[Edge], kinds: frozenset[str]) -> list[list[str]]:
    """Strongly connected components of more than one module, over the edges of ``kinds`` (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.kind in kinds:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def cycles(modules: set[str], edges: list[Edge]) -> list[Cycle]:
    """Every cycle among ``modules``: runtime cycles first, then those that exist only through typing imports.

    A component of the whole graph (typing imports included) that is not also a
    component of the runtime graph is a typing cycle; it is reported even when
    a runtime cycle lies inside it, since its typing imports widen that cycle.
    """
    runtime = components(modules, edges, RUNTIME)
    every = [c for c in components(modules, edges, EVERY) if c not in runtime]
    found = []
    for comps, is_runtime, kinds in ((runtime, True, RUNTIME), (every, False, EVERY)):
        for comp in comps:
            members = set(comp)
            inner = tuple(e for e in edges if e.kind in kinds and e.source in members and e.target in members)
            found.append(Cycle(tuple(comp), inner, is_runtime))
    return found


def upward(edges: list[Edge], layers: Mapping[str, int] = LAYERS) -> list[str]:
    """Every import from a lower layer into a higher one, one line each."""
    return [
        f"upward: {e.source} (layer {layer_of(e.source, layers)}) imports {e.target} "
        f"(layer {layer_of(e.target, layers)}) at line {e.line} ({e.kind} level)"
        for e in edges
        if layer_of(e.target, layers) > layer_of(e.source, layers)
    ]


def problems(package: Path = PACKAGE, layers: Mapping[str, int] = LAYERS) -> list[str]:
    """Every upward edge and every runtime cycle, one line each (empty when the graph is clean)."""
    modules, edges = collect(package)
    return upward(edges, layers) + [c.describe() for c in cycles(modules, edges) if c.runtime]


def typing_cycles(package: Path = PACKAGE) -> list[str]:
    """Every cycle that exists only through ``if TYPE_CHECKING:`` imports, one line each."""
    modules, edges = collect(package)
    return [c.describe() for c in cycles(modules, edges) if not c.runtime]


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--graph", action="store_true", help="print every edge")
    p.add_argument("--strict-typing", action="store_true", help="fail on typing-only cycles too")
    args = p.parse_args()
    modules, edges = collect()
    if args.graph:
        for e in edges:
            print(f"{e.source} -> {e.target} ({e.kind}, line {e.line})")
    found = problems()
    typing = typing_cycles()
    for line in found + typing:
        print(line)
    print(f"{len(modules)} modules, {len(edges)} imports between them: {len(found)} problem(s) "
          f"(upward edges, runtime cycles), {len(typing)} typing-only cycle(s)")
    return 1 if found or (args.strict_typing and typing) else 0


if __name__ == "__main__":
    raise SystemExit(main())
