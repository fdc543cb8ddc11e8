"""scripts/check_imports.py (run by `./dev check`) finds import cycles, and the code has none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import check_imports  # noqa: E402


def test_a_cycle_through_type_checking_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n")
    (pkg / "a.py").write_text("from .b import B\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n")
    (pkg / "c.py").write_text("from . import a\ndef f():\n    from . import c\n")
    paths = {"pkg": pkg / "__init__.py", **{f"pkg.{m}": pkg / f"{m}.py" for m in "abc"}}
    graph = {name: check_imports.imports(name, path, set(paths)) for name, path in paths.items()}
    assert graph["pkg"] == set()  # a package's lazy re-exports are not edges
    assert graph["pkg.c"] == {"pkg.a"}  # the lazy import inside f() is not one either
    assert check_imports.cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_imports.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no import cycles among "), r.stdout
