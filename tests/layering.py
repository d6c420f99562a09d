"""The import graph of a package, lazy imports included, and checks of its layering.

An import is any ``import`` statement anywhere in a module (at the top, inside a function, under
``if TYPE_CHECKING:``), ``importlib.import_module("pkg.x")`` with a literal name, and the
module names in a module-level ``_LAZY`` table (PEP 562: ``reqlog/__init__.py`` imports its
public names that way, when first used). import-linter's graph builder reads the import
statements but not the last two, which is why this is a small AST walk of its own.

Used by tests/test_layering.py; see ``LAYERS`` there for reqlog's own rules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Graph", "cycles", "layer_violations", "read_graph"]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    how: str  # "import", "lazy import" (inside a function), "import_module", "_LAZY"


@dataclass
class Graph:
    modules: set[str]
    edges: list[Edge]

    def targets(self, module: str) -> set[str]:
        return {e.target for e in self.edges if e.source == module}


def _module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def read_graph(root: Path, package: str | None = None) -> Graph:
    """The graph of the package whose ``__init__.py`` is in ``root``: edges between its modules."""
    package = package or root.name
    files = {_module_name(root, p, package): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges: list[Edge] = []
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, inside_function in _walk(tree):
            for target, how in _imports(node, name, is_package, modules):
                if target in modules and target != name:
                    kind = "lazy import" if inside_function and how == "import" else how
                    edges.append(Edge(name, target, getattr(node, "lineno", 0), kind))
    return Graph(modules, edges)


def _walk(tree: ast.AST) -> Iterable[tuple[ast.AST, bool]]:
    """Every node, and whether it sits inside a function."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, inside = stack.pop()
        yield node, inside
        nested = inside or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        stack.extend((child, nested) for child in ast.iter_child_nodes(node))


def _resolve(module: str | None, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def _imports(
    node: ast.AST, current: str, is_package: bool, modules: set[str]
) -> Iterable[tuple[str, str]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, "import"
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(node.module, node.level, current, is_package)
        for alias in node.names:
            # ``from pkg import module`` imports the module; ``from pkg import name`` the package.
            candidate = f"{base}.{alias.name}"
            yield (candidate if candidate in modules else base), "import"
    elif isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            value = node.args[0].value
            if isinstance(value, str):
                # import_module(".x", package) is left out: reqlog names its modules in full.
                yield value, "import_module"
    elif (
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
        and isinstance(node.value, ast.Dict)
    ):
        for entry in node.value.values:
            if isinstance(entry, ast.Constant) and isinstance(entry.value, str):
                yield entry.value, "_LAZY"


def cycles(graph: Graph) -> list[list[str]]:
    """Every import cycle (each strongly connected component of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    successors = {m: sorted(graph.targets(m)) for m in graph.modules}

    def visit(module: str) -> None:  # Tarjan's algorithm
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for target in successors[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def layer_of(module: str, layers: Mapping[str, int]) -> int | None:
    """The layer of ``module``: its own entry, else its closest package's."""
    parts = module.split(".")
    while parts:
        name = ".".join(parts)
        if name in layers:
            return layers[name]
        parts.pop()
    return None


def layer_violations(graph: Graph, layers: Mapping[str, int]) -> list[str]:
    """Edges that do not point down to a lower layer, and modules no layer names.

    Modules of one package placed as a whole (``reqlog.cli``) may import each other.
    """
    problems = [f"{m}: in no layer" for m in sorted(graph.modules) if layer_of(m, layers) is None]
    for edge in graph.edges:
        source, target = layer_of(edge.source, layers), layer_of(edge.target, layers)
        if source is None or target is None:
            continue
        same_unit = _unit(edge.source, layers) == _unit(edge.target, layers)
        if target >= source and not same_unit:
            problems.append(
                f"{edge.source} (layer {source}) -> {edge.target} (layer {target}), "
                f"line {edge.line} ({edge.how})"
            )
    return problems


def _unit(module: str, layers: Mapping[str, int]) -> str:
    parts = module.split(".")
    while parts:
        name = ".".join(parts)
        if name in layers:
            return name
        parts.pop()
    return module
