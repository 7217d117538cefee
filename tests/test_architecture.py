"""The import graph of the two packages, read from the source (module-level and function-level imports alike):
no cycle, and the core never imports Dagster (only the Pipes entry points import dagster-pipes) nor the pipeline."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("vfusion3d_core", "vfusion3d_pipeline")


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module name an ``import`` / ``from ... import`` in the file refers to (relative ones resolved)."""
    me = module_name(path.relative_to(REPO))
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    files = [p for root in ROOTS for p in (REPO / root).rglob("*.py")]
    modules = {module_name(p.relative_to(REPO)) for p in files}
    graph = {}
    for path in files:
        me, edges = module_name(path.relative_to(REPO)), set()
        for name in imported_names(path):
            while name and name not in modules:  # `from pkg.mod import function` -> pkg.mod
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name != me:
                edges.add(name)
        graph[me] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert "vfusion3d_pipeline.publish" in graph and graph["vfusion3d_pipeline.publish"]  # the graph is read
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_core_imports_neither_dagster_nor_the_pipeline() -> None:
    offenders = []
    for path in (REPO / "vfusion3d_core").rglob("*.py"):
        for name in imported_names(path):
            top = name.split(".")[0]
            if top == "vfusion3d_pipeline" or (top == "dagster" or name.startswith("dagster.")):
                offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []
