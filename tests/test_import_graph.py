"""The package's import graph, read from the source: no circle (a module importing, at any depth of its code, a
module that imports it back), and no registry importing its members."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / "pskd").rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every pskd module `path` imports, at the top or inside a function (`from a import b` is module a.b when
    that is a module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, without recursion)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_reader_finds_a_circle_when_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    edges = graph()
    assert len(edges) > 80 and "pskd.distill.methods" in edges["pskd.distill.losses.kd"]
    assert circles(edges) == []


def test_no_registry_imports_its_members():
    edges = graph()
    registries = {"pskd.models.zoo": "pskd.models.", "pskd.distill.terms": "pskd.distill.losses",
                  "pskd.distill.methods": "pskd.distill.losses", "pskd.data.registry": "pskd.data."}
    for registry, members in registries.items():
        assert not {m for m in edges[registry] if m.startswith(members) and m != registry}, registry


def test_no_module_loads_pskd_code_by_a_name_in_a_string():
    """importlib over pskd's own modules hides an import from the graph (only the lazy top-level API and the
    deprecated pskd.train alias may)."""
    allowed = {"pskd", "pskd.train"}
    for name, path in modules().items():
        if name not in allowed:
            assert "import_module(f\"pskd" not in path.read_text() and "import_module('pskd" not in path.read_text()
