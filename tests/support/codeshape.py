"""The shape of the code, read from its source with ast: the import graph of the packages
(every import statement, the ones inside functions too) and the length of every function.

Used by tests/unit/test_code_shape.py; kept apart so that its own test can run it on small
made-up packages and see it find what it must find.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Import:
    """One edge of the import graph: `importer` imports `imported` at `path`:`line`."""
    importer: str
    imported: str
    path: str
    line: int


def module_files(root: Path, packages: tuple[str, ...], skip: frozenset[str] = frozenset()) -> dict[str, Path]:
    """module name -> file, for every .py under root/<package> (a package's __init__.py is the
    package's own name). `skip`: paths relative to root to leave out (generated files)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if rel.as_posix() in skip:
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom anywhere in the module (functions, methods, try/except blocks),
    except the bodies of `if TYPE_CHECKING:`, which never run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _deepest(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted `name` that is one of `modules` (import a.b.c runs a.b.c)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _package_of(module: str, path: Path) -> str:
    """The package a relative import in `module` starts from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The imports of `module` that name one of `modules`: `import a.b`, `from a import b`
    (a.b when it is a module, else a itself), relative imports resolved against the package."""
    tree = ast.parse(path.read_text(), str(path))
    edges: list[Import] = []
    for node in _import_nodes(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = _package_of(module, path).split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        for target in targets:
            hit = _deepest(target, modules)
            if hit is not None and hit != module:
                edges.append(Import(module, hit, str(path), node.lineno))
    return edges


def import_graph(modules: dict[str, Path]) -> dict[str, list[Import]]:
    """importer -> its imports of the other modules."""
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, list[Import]]) -> list[list[Import]]:
    """One cycle (as its edges, in order) per strongly connected component of more than one
    module (Tarjan's algorithm, iteratively), sorted by the modules they join."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = sorted({e.imported for e in graph.get(node, [])})
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted((_one_cycle(graph, set(c)) for c in components), key=lambda edges: edges[0].importer)


def _one_cycle(graph: dict[str, list[Import]], members: set[str]) -> list[Import]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(members)
    came: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for edge in graph[node]:
                if edge.imported not in members:
                    continue
                if edge.imported == start:
                    path = [edge]
                    while path[0].importer != start:
                        path.insert(0, came[path[0].importer])
                    return path
                if edge.imported not in came:
                    came[edge.imported] = edge
                    nxt.append(edge.imported)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(members)}")


def describe(cycle: list[Import]) -> str:
    """a -> b -> a, with where each import is written."""
    chain = " -> ".join([cycle[0].importer, *(e.imported for e in cycle)])
    where = "; ".join(f"{e.importer} imports {e.imported} at {Path(e.path).name}:{e.line}" for e in cycle)
    return f"{chain} ({where})"


def long_functions(path: Path, limit: int) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of every function or method in `path` longer than
    `limit` lines, counted from its `def` line to its last line (docstring, comments and
    nested functions included; decorators not)."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    found.append((name, child.lineno, length))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found
