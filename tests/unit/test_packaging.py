"""Packaging: one version (pyproject.toml), a LICENSE, and an sdist that carries its tests and docs."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_written_once() -> None:
    """pyproject.toml is the one place: the packages read it from the installed metadata."""
    import edge_lstm

    for f in ("edge_lstm/__init__.py", "export/__init__.py", "export/api.py"):
        assert not re.search(r'(__version__|TOOL_VERSION) = "\d+\.\d+', (ROOT / f).read_text()), f
    assert edge_lstm.__version__ == version("edge-lstm")


def test_license_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_sdist_manifest_carries_tests_and_docs() -> None:
    lines = (ROOT / "MANIFEST.in").read_text().splitlines()
    grafted = {line.split()[1] for line in lines if line.startswith("graft ")}
    assert grafted >= {"tests", "systemd", "docs", "bench", "scripts"}
    included = {w for line in lines if line.startswith("include ") for w in line.split()[1:]}
    assert {"dev", "LICENSE", "README.md"} <= included


def test_every_package_is_installed() -> None:
    """A package directory missing from `[tool.setuptools] packages` works in the editable install only."""

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edge_lstm").rglob("__init__.py")}
    assert found - listed == set()
