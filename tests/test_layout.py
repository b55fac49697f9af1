"""The package's shape: no import cycle, config at the bottom, no test
doubles in the wheel. Imports are read from the source (module-level and
function-local alike); those under `if TYPE_CHECKING:` do not run and do
not count."""

import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "factory"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        targets = set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("factory"):
                targets |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods}
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("factory")}
        # a package and its own modules (an __init__ re-exporting them) are one unit
        graph[mod] = {t for t in targets if t in mods and t != "factory"
                      and not t.startswith(mod + ".") and not mod.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph()) == []


def test_config_is_the_bottom_layer():
    graph = import_graph()
    assert graph["factory.config"] <= {"factory.assets", "factory.think"}
    assert graph["factory.think"] == set()
    assert graph["factory.assets"] == set()


def test_the_run_loop_knows_nothing_of_ray():
    """Only pipeline.make_driver names the Ray driver; the loop, the local
    driver and the worker do not import the scale package at all."""
    graph = import_graph()
    for mod in ("factory.driver", "factory.worker", "factory.store.shards"):
        assert not any(t.startswith("factory.scale") for t in graph[mod]), mod
    assert {t for t in graph["factory.pipeline"] if t.startswith("factory.scale")} == {"factory.scale"}
    assert (PKG / "pipeline.py").read_text().count("factory.scale import") == 1


def test_no_test_doubles_in_the_package():
    assert not (PKG / "testing").exists()
    names = {p.name for p in PKG.rglob("*.py")}
    assert not names & {"fake_openai.py", "local_hub.py"}
