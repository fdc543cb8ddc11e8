"""No import cycles between modules of edge_lstm/ and export/ (run by `./dev check`).

A module's imports are those run when it is imported: top-level statements and module-level blocks
(`if TYPE_CHECKING:` included, since a cycle there is a cycle in the design, except in a package's
`__init__.py`, where it only names the lazy re-exports of its `__getattr__` for type checkers), not
imports inside functions (the deliberate lazy ones). An edge to a package is an edge to its `__init__`. Prints each
cycle and exits 1: there is no allowance list (a module that needs another's object takes it through a
small Protocol instead, as service/reload.py and service/stats.py take the daemon).

    python scripts/check_imports.py
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edge_lstm": ROOT / "edge_lstm", "edge_lstm_export": ROOT / "export"}


def modules() -> dict[str, Path]:
    found = {}
    for name, top in PACKAGES.items():
        for path in top.rglob("*.py"):
            parts = [name, *path.relative_to(top).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _module_level(body: list[ast.stmt], init: bool) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if init and _type_checking(node):
            continue  # a package's lazy re-exports (module __getattr__): names for type checkers only
        if isinstance(node, (ast.If, ast.Try)):
            for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", []))):
                yield from _module_level(block, init)


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _module_level(ast.parse(path.read_text(), str(path)).body, path.name == "__init__.py"):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = (
                f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module or "")
            )
            subs = [f"{base}.{a.name}" for a in node.names]
            # `from . import tail` imports the submodule; `from .. import __version__` the package.
            targets = [t if t in known else base or "" for t in subs]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    found = cycles(graph)
    for c in found:
        print("import cycle: " + " <-> ".join(c), file=sys.stderr)
    if not found:
        print(f"no import cycles among {len(mods)} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
