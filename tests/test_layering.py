"""reqlog's modules depend one way: from the entry points down to output, with no cycle.

The graph is read from the source (tests/layering.py): every import statement, those inside
functions included, ``importlib.import_module("reqlog...")`` calls and the ``_LAZY`` table of
``reqlog/__init__.py``. A module may import only from layers below its own; the leaves import
nothing of reqlog; the ``reqlog`` command imports nothing of the core but the schema maps, so
that it starts without structlog and Starlette.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.layering import Graph, cycles, layer_violations, read_graph

ROOT = Path(__file__).resolve().parent.parent / "reqlog"

#: Module -> layer; an import must point to a lower layer. A package listed whole (reqlog.cli)
#: is one unit, free inside. docs/architecture.md draws the same picture.
LAYERS: dict[str, int] = {
    # the package's face: re-exports (lazily, see _LAZY), the command, the pytest plugin
    "reqlog": 10,
    "reqlog.__main__": 10,
    "reqlog.pytest_plugin": 10,
    # what is built on the whole of reqlog
    "reqlog.testing": 9,
    "reqlog.integrations.celery": 9,
    "reqlog.integrations.gunicorn": 9,
    "reqlog.integrations.httpx": 9,
    "reqlog.cli": 9,
    # the entry points: the middleware, get_logger(), configure()
    "reqlog.middleware": 8,
    "reqlog._logger": 7,
    "reqlog._configure": 6,
    # building the pipeline from the options, and what it builds
    "reqlog._pipeline": 5,
    "reqlog._options": 4,
    "reqlog._stdlib": 4,
    "reqlog._fused": 4,
    "reqlog._error_response": 4,
    "reqlog._lifecycle": 4,
    "reqlog.integrations.otel": 4,
    # one event through the chain to the output
    "reqlog._emit": 3,
    # the live configuration
    "reqlog._state": 2,
    # request context, rendering, routes, capture: small parts that know no configuration
    "reqlog.context": 1,
    "reqlog._render": 1,
    "reqlog._routes": 1,
    "reqlog.bodies": 1,
    "reqlog._access": 1,
    # leaves: nothing of reqlog
    "reqlog.output": 0,
    "reqlog.processors": 0,
    "reqlog.schemas": 0,
    "reqlog._escape": 0,
    "reqlog._proxies": 0,
    "reqlog._request_id": 0,
    "reqlog._foreign": 0,
    "reqlog._headers": 0,
    "reqlog.integrations": 0,
}

LEAVES = [m for m, layer in LAYERS.items() if layer == 0]


@pytest.fixture(scope="module")
def graph() -> Graph:
    return read_graph(ROOT)


def test_no_import_cycle(graph: Graph) -> None:
    assert cycles(graph) == []


def test_imports_point_down_the_layers(graph: Graph) -> None:
    assert layer_violations(graph, LAYERS) == []


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaves_import_nothing_of_reqlog(graph: Graph, leaf: str) -> None:
    assert graph.targets(leaf) == set()


def test_the_command_imports_only_the_schema_maps(graph: Graph) -> None:
    outside = {
        e.target
        for e in graph.edges
        if e.source.startswith("reqlog.cli") and not e.target.startswith("reqlog.cli")
    }
    assert outside == {"reqlog.schemas"}


def test_the_graph_sees_lazy_imports(graph: Graph) -> None:
    # The package's public names are imported through _LAZY, OpenTelemetry inside a function:
    # a checker that missed them would pass on a package full of cycles.
    edges = {(e.source, e.target, e.how) for e in graph.edges}
    assert ("reqlog", "reqlog._configure", "_LAZY") in edges
    assert ("reqlog._pipeline", "reqlog.integrations.otel", "lazy import") in edges


# --- the checker itself catches what it must ---------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    root.mkdir()
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    "files",
    [
        # a top-level import one way, an import inside a function the other way
        {"a.py": "import pkg.b\n", "b.py": "def f():\n    from pkg import a\n    return a\n"},
        # importlib.import_module, the way reqlog's __init__ imports its names
        {
            "a.py": "import importlib\n\ndef f():\n    return importlib.import_module('pkg.b')\n",
            "b.py": "from pkg.a import f\n",
        },
        # the _LAZY table of a package's __init__, back from a module it names
        {
            "__init__.py": "_LAZY = {'thing': 'pkg.a'}\n",
            "a.py": "def f():\n    import pkg\n    return pkg\n",
        },
    ],
    ids=["function-level import", "import_module", "_LAZY table"],
)
def test_a_lazy_import_cycle_is_caught(tmp_path: Path, files: dict[str, str]) -> None:
    graph = read_graph(_package(tmp_path, files))
    assert len(cycles(graph)) == 1
    layers = {"pkg": 2, "pkg.a": 1, "pkg.b": 0}
    assert layer_violations(graph, layers) != []


def test_a_lazy_import_up_the_layers_is_caught(tmp_path: Path) -> None:
    # output.flush() used to reach back into the configuration from inside a function.
    root = _package(
        tmp_path,
        {
            "output.py": "def flush():\n    from pkg import state\n    return state.STATE\n",
            "state.py": "from pkg import output\nSTATE = output\n",
        },
    )
    [problem] = layer_violations(read_graph(root), {"pkg": 2, "pkg.state": 1, "pkg.output": 0})
    assert problem.startswith("pkg.output (layer 0) -> pkg.state (layer 1)")
    assert "lazy import" in problem


def test_a_module_in_no_layer_is_reported(tmp_path: Path) -> None:
    root = _package(tmp_path, {"new.py": ""})
    assert layer_violations(read_graph(root), {"pkg": 1}) == []  # inside the package's unit
    assert "pkg.new: in no layer" in layer_violations(read_graph(root), {"pkg.other": 0})
