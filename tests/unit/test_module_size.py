"""Modules stay readable: at most 400 lines in the shipped packages (issue 23; docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 400


def test_no_shipped_module_is_over_400_lines() -> None:
    paths = [*(ROOT / "edge_lstm").rglob("*.py"), *(ROOT / "export").rglob("*.py")]
    assert len(paths) > 50  # the packages were found
    long = {str(p.relative_to(ROOT)): n for p in paths if (n := len(p.read_text().splitlines())) > LIMIT}
    assert not long, f"split these modules (over {LIMIT} lines): {long}"
