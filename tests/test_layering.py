"""The package's import graph, read from the source with ``ast``: no cycles; the library (everything
but ``app`` and ``reproduce``) imports neither of them; the experiment runner
(``lightning_rect.reproduce``) is a leaf on top of both."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "lightning_rect"
#: The one module allowed to reach ``reproduce``: it routes ``python -m lightning_rect reproduce``.
ROUTER = "lightning_rect.__main__"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the lightning_rect modules it imports (anywhere in the file, functions included)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from pkg import submodule" imports the submodule; other names come from pkg itself
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycle():
    graph = import_graph()
    assert "lightning_rect.app.cli" in graph and graph["lightning_rect.app.cli"]  # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_nothing_outside_reproduce_imports_it():
    offenders = {
        name: sorted(t for t in targets if t.startswith("lightning_rect.reproduce"))
        for name, targets in import_graph().items()
        if not name.startswith("lightning_rect.reproduce") and name != ROUTER
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def is_library(name: str) -> bool:
    return not name.startswith(("lightning_rect.app", "lightning_rect.reproduce")) and name != ROUTER


def test_the_library_imports_no_application_module():
    graph = import_graph()
    assert "lightning_rect.models.classifier" in graph and "lightning_rect.app.cli" in graph
    offenders = {
        name: sorted(t for t in targets if not is_library(t)) for name, targets in graph.items() if is_library(name)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def used_only_by_reproduce(graph: dict[str, set[str]]) -> list[str]:
    """Library modules that no module outside ``reproduce`` imports (the package's own ``__init__``
    files, which hold the public names, aside): facts only the reproductions need, in the wrong place."""
    importers: dict[str, set[str]] = {name: set() for name in graph}
    for name, targets in graph.items():
        for target in targets:
            importers[target].add(name)
    packages = {name for name in graph if (ROOT / name.replace(".", "/") / "__init__.py").is_file()}
    return sorted(
        name
        for name in graph
        if is_library(name)
        and name not in packages
        and importers[name]
        and all(i.startswith("lightning_rect.reproduce") for i in importers[name])
    )


def test_facts_only_the_reproductions_use_live_in_reproduce():
    graph = import_graph()
    assert used_only_by_reproduce(graph) == []
    planted = {
        **graph,
        "lightning_rect.catalog": set(),
        "lightning_rect.reproduce.budgets": graph["lightning_rect.reproduce.budgets"] | {"lightning_rect.catalog"},
    }
    assert used_only_by_reproduce(planted) == ["lightning_rect.catalog"]
