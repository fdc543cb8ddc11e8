#!/usr/bin/env python3
"""paho contained: no module of edge_lstm/ but the paho adapter reaches paho's private members.

    python scripts/check_paho.py          # run by ./dev check; exit 1 and one line per finding

The daemon needs some of paho-mqtt 2.x's internals (the batched writes, the fast packet paths: docs/
architecture.md, "Where paho lives"). A paho release can change any of them, so they all sit in one
adapter, `edge_lstm/service/paho_adapter/`, which lists the paho versions its tests passed with
(`CHECKED_WITH`) and is tested against the oldest and the newest paho 2.x the project allows
(`./dev paho`). Everywhere else this finds, over the source's syntax tree:

* a subclass of a class imported from paho (a subclass reaches paho's internals through `self`);
* an import of a private name from a paho module;
* an attribute access `x._name` on anything but `self` / `cls`, where `_name` is a private member of
  paho's (a method or attribute name that paho's own source defines: `_published`, `_topic`,
  `_sock`, ...).

It also says (without failing) when the installed paho is not in the adapter's `CHECKED_WITH`.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "edge_lstm" / "service" / "paho_adapter"


def paho_private_names() -> set[str]:
    """Every `_name` (not dunder) that paho's installed source defines or assigns on `self`."""
    import paho.mqtt

    names: set[str] = set()
    for path in Path(paho.mqtt.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _paho_imports(tree: ast.Module) -> set[str]:
    """Local names bound to something imported from paho."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("paho")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paho"):
            bound |= {a.asname or a.name for a in node.names}
    return bound


def _base_name(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def findings(path: Path, private: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    from_paho = _paho_imports(tree)
    where = path.relative_to(ROOT) if ROOT in path.parents else path
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paho"):
            out += [
                f"{where}:{node.lineno}: imports paho's private {a.name}" for a in node.names if a.name.startswith("_")
            ]
        elif isinstance(node, ast.ClassDef):
            out += [
                f"{where}:{node.lineno}: class {node.name} subclasses paho's {ast.unparse(b)}"
                for b in node.bases
                if _base_name(b) in from_paho
            ]
        elif isinstance(node, ast.Attribute) and node.attr in private:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                out.append(f"{where}:{node.lineno}: {ast.unparse(node)} reaches paho's private {node.attr}")
    return out


def main() -> int:
    from edge_lstm.service.paho_adapter import CHECKED_WITH

    private = paho_private_names()
    problems: list[str] = []
    for path in sorted((ROOT / "edge_lstm").rglob("*.py")):
        if ADAPTER not in path.parents:
            problems += findings(path, private)
    for p in problems:
        print(p)
    if problems:
        print(f"check_paho: {len(problems)} touch(es) of paho internals outside {ADAPTER.relative_to(ROOT)}/")
        return 1
    installed = metadata.version("paho-mqtt")
    if installed not in CHECKED_WITH:
        print(
            f"check_paho: note: paho-mqtt {installed} is not among the versions the adapter was checked with "
            f"{list(CHECKED_WITH)}: run ./dev paho, then add it to CHECKED_WITH"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
