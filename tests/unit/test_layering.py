"""The layering rules of STYLE.md and docs/architecture.md, checked on the source's imports
(every import statement, those inside functions and `TYPE_CHECKING` blocks included): a
failure names the file and line of each offending import."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import xshathra

ROOT = Path(xshathra.__file__).parent
JSON_LIBRARIES = ("json", "msgspec.json", "orjson", "ujson", "simplejson")
HTTP_FRAMEWORKS = ("fastapi", "starlette", "uvicorn")
SQL = ("sqlalchemy", "alembic", "aiosqlite", "asyncpg")
BACKENDS = ("brokers", "presence", "storage", "ratelimit", "links")
# The roles' protocols live in the backend packages' __init__ (`xshathra.brokers.Broker`,
# `xshathra.presence.PresenceStore`): the engine may import those, never an implementation.
ROLE_PROTOCOLS = ("xshathra.brokers", "xshathra.brokers.events", "xshathra.presence")


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module, where it is imported."""

    source: Path  # the importing file
    line: int
    module: str  # absolute dotted name, e.g. "xshathra.engine.hub" or "msgspec.json"

    @property
    def package(self) -> str:
        """The importing file's package below xshathra ("engine", "model", "server")."""
        return package_of(self.source)

    def __str__(self) -> str:
        return f"src/xshathra/{self.source.relative_to(ROOT)}:{self.line} imports {self.module}"


def package_of(path: Path) -> str:
    first = path.relative_to(ROOT).parts[0]
    return first.removesuffix(".py")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative: `from . import x` in a package's __init__ is the package itself.
                base = here.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                prefix = ".".join(base)
                module = f"{prefix}.{node.module}" if node.module else prefix
            else:
                module = node.module or ""
            yield Import(path, node.lineno, module)
            # `from msgspec import json` imports msgspec.json; `from xshathra import engine`
            # imports the engine package.
            for alias in node.names:
                yield Import(path, node.lineno, f"{module}.{alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "msgspec"
            and node.attr == "json"
        ):
            yield Import(path, node.lineno, "msgspec.json")  # `import msgspec; msgspec.json...`


def sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "migrations" not in p.parts)


ALL = [imp for path in sources() for imp in imports_of(path)]


def is_under(module: str, names: Iterable[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def ours(module: str) -> str | None:
    """The package below xshathra that `module` belongs to, or None if it is not ours."""
    if not module.startswith("xshathra."):
        return None
    return module.split(".")[1]


def real_module(module: str) -> bool:
    """Whether a dotted name from `from a import b` is a module (b may be a class or a
    function): only modules and packages count for the rules on our own packages."""
    parts = module.split(".")
    if parts[0] != "xshathra":
        return True
    path = ROOT.parent.joinpath(*parts)
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def fail(found: list[Import], rule: str) -> None:
    if found:
        unique = sorted({str(i) for i in found})
        pytest.fail(f"{rule}:\n  " + "\n  ".join(unique), pytrace=False)


def in_package(package: str) -> list[Import]:
    return [i for i in ALL if i.package == package and real_module(i.module)]


def test_the_walk_sees_the_tree() -> None:
    """The rules below would pass vacuously on an empty walk."""
    assert len(sources()) > 50
    assert any(i.module == "xshathra.model" for i in in_package("engine"))
    assert any(i.module == "xshathra.engine.node" for i in in_package("server"))


def test_protocol_imports_only_the_model() -> None:
    found = [i for i in in_package("protocol") if ours(i.module) not in (None, "protocol", "model")]
    fail(found, "protocol/ may import nothing of ours but xshathra.model")


def test_model_imports_nothing_of_ours() -> None:
    fail([i for i in in_package("model") if ours(i.module)], "model.py imports nothing of ours")


def test_engine_imports_no_json_library() -> None:
    found = [i for i in in_package("engine") if is_under(i.module, JSON_LIBRARIES)]
    fail(found, "engine/ encodes through the codecs in protocol/, never a JSON library")


def test_engine_imports_no_settings_http_framework_or_sql() -> None:
    found = [
        i
        for i in in_package("engine")
        if is_under(i.module, ("xshathra.settings", *HTTP_FRAMEWORKS, *SQL))
    ]
    fail(found, "engine/ takes EngineOptions, knows no HTTP framework and no SQL")


def test_engine_imports_no_concrete_backend() -> None:
    backends = tuple(f"xshathra.{b}" for b in BACKENDS)
    found = [
        i
        for i in in_package("engine")
        if is_under(i.module, backends) and i.module not in ROLE_PROTOCOLS
    ]
    fail(found, "engine/ imports the roles' protocols only, never a backend")


def test_backends_never_import_the_engine() -> None:
    found = [
        i
        for backend in BACKENDS
        for i in in_package(backend)
        if is_under(i.module, ("xshathra.engine",))
    ]
    fail(found, "backends (brokers, presence, storage, ratelimit, links) never import engine/")


def package_graph() -> dict[str, dict[str, list[Import]]]:
    """package -> package it imports -> the import statements that make the edge."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for imp in ALL:
        target = ours(imp.module)
        if target is None or target == imp.package or not real_module(imp.module):
            continue
        graph.setdefault(imp.package, {}).setdefault(target, []).append(imp)
    return graph


def cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_in(component: list[str], graph: dict[str, dict[str, list[Import]]]) -> list[str]:
    """One cycle through a strongly connected component: a path back to its first package."""
    start = component[0]
    members = set(component)
    paths = [[start]]
    while paths:  # breadth first: the shortest cycle, the easiest to read
        path = paths.pop(0)
        for nxt in sorted(graph.get(path[-1], {})):
            if nxt == start:
                return [*path, start]
            if nxt in members and nxt not in path:
                paths.append([*path, nxt])
    raise AssertionError(f"no cycle through {component}")


def test_no_two_packages_import_each_other() -> None:
    graph = package_graph()
    problems = []
    for component in cycles(graph):
        path = cycle_in(component, graph)
        problems.append(" -> ".join(path))
        for a, b in itertools.pairwise(path):
            edge = graph[a][b]
            more = f" (and {len(edge) - 1} more)" if len(edge) > 1 else ""
            problems.append(f"    {edge[0]}{more}")
    if problems:
        pytest.fail(
            "packages that import each other, directly or around a cycle:\n  "
            + "\n  ".join(problems),
            pytrace=False,
        )


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check itself: a two-package cycle and a three-package one are found."""
    imp = Import(ROOT / "model.py", 1, "x")
    graph = {"a": {"b": [imp]}, "b": {"a": [imp]}, "c": {"d": [imp]}, "d": {"e": [imp]}}
    graph["e"] = {"c": [imp]}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]
    assert cycles({"a": {"b": [imp]}, "b": {}}) == []
    assert cycle_in(["c", "d", "e"], graph) == ["c", "d", "e", "c"]
