"""The package's own import graph, read from the source (no module is imported): closures and cycles.

Every ``import`` / ``from ... import`` of a ``stages`` module counts, including imports inside
functions (a stage may run them). ``from stages.x import name`` imports ``stages.x.name`` when that
is a module, else ``stages.x`` itself. Importing ``stages.a.b`` also runs ``stages/__init__.py`` and
``stages/a/__init__.py``: closures include the parents of every module.

Used by the train stage's fingerprint (the code a training run executes) and by the tests that
check dvc.yaml's deps and that no import cycle exists:

    python -m stages.codebase            # prints the package-level graph and any cycle
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
PACKAGE = PACKAGE_DIR.name


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _resolve_relative(module: str, level: int, target: str | None) -> str:
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - level + 1]
    return ".".join(base + ([target] if target else []))


@cache
def direct_imports(name: str) -> frozenset[str]:
    """The package's modules that ``name`` imports (anywhere in its source)."""
    known = modules()
    tree = ast.parse(known[name].read_text(), filename=str(known[name]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_relative(name, node.level, node.module) if node.level else (node.module or "")
            if source not in known:
                continue
            subs = {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known}
            found.update(subs)
            if len(subs) < len(node.names):  # some names come from the module itself
                found.add(source)
    found.discard(name)
    return frozenset(found)


def parents(name: str) -> list[str]:
    """The packages that Python initialises before ``name``: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(roots: Iterable[str], opaque: Iterable[str] = ()) -> set[str]:
    """Every module that importing ``roots`` may load (transitively), parents included.

    ``opaque`` modules are included but their imports are not followed (the CLI, whose commands
    import different stages: the caller names the imports of the command that runs).
    """
    todo = list(roots)
    stop = set(opaque)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in stop:
            todo.extend(direct_imports(name))
        todo.extend(parents(name))
    return seen


def files(names: Iterable[str]) -> list[Path]:
    """Source files of modules, relative to the repository root, sorted."""
    return sorted(modules()[n].relative_to(ROOT) for n in names)


def code_hash(names: Iterable[str]) -> str:
    """SHA-256 of the source files of ``names`` (paths and contents, in path order)."""
    h = hashlib.sha256()
    for rel in files(names):
        h.update(rel.as_posix().encode())
        h.update((ROOT / rel).read_bytes())
    return h.hexdigest()


def package_of(name: str) -> str:
    """The top-level unit of a module: ``stages.train.loop`` -> ``stages.train``; ``stages.config`` stays."""
    parts = name.split(".")
    return ".".join(parts[:2])


def cycles() -> list[list[str]]:
    """Import cycles between modules, as lists of module names (empty when the graph is acyclic).

    An import of a module's own parent package that only reaches its submodules is how Python
    loads packages, not a cycle; ``from package import name`` of a name the parent's ``__init__``
    defines is an edge like any other.
    """
    graph = {m: sorted(direct_imports(m)) for m in modules()}
    return _cycles_of(graph)


def package_graph() -> dict[str, list[str]]:
    """Which top-level units each unit imports (``stages.train`` -> ``stages.model``, ...)."""
    graph: dict[str, set[str]] = {}
    for m in modules():
        graph.setdefault(package_of(m), set()).update(
            package_of(d) for d in direct_imports(m) if package_of(d) != package_of(m)
        )
    return {k: sorted(v) for k, v in graph.items()}


def package_cycles() -> list[list[str]]:
    """Cycles between top-level units (``stages.train`` <-> ``stages.index`` would be one)."""
    return _cycles_of(package_graph())


def _cycles_of(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, ()))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
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
                    out.append(sorted(component))
    return out


def main() -> None:
    graph = package_graph()
    for unit in sorted(graph):
        print(f"{unit:22s} -> {', '.join(graph[unit]) or '-'}")
    found = cycles() + package_cycles()
    print("import cycles:", found if found else "none")
    raise SystemExit(1 if found else 0)


if __name__ == "__main__":
    main()
