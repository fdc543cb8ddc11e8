"""Unit tests need no torch: importing any tests/unit module (in any of its folders) leaves torch
unimported (torch takes seconds and ~300 MB to import; only tests/export needs it). Checked in one fresh
interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent

# Modules that still import torch, with why; a new one fails, and so does a listed one that no longer
# does (delete its line then).
KNOWN: dict[str, str] = {}

PROBE = """
import importlib, json, sys
sys.path[:0] = [sys.argv[1]]
found = {}
for folder, name in json.loads(sys.argv[2]):
    sys.path.insert(0, folder)  # as pytest imports a test module: by its name, from its own folder
    before = "torch" in sys.modules
    importlib.import_module(name)
    if not before and "torch" in sys.modules:
        found[name] = True
        for m in [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "edge_lstm_export"))]:
            del sys.modules[m]  # so that the next module is judged on its own
print(json.dumps(sorted(found)))
"""


def test_unit_test_modules_import_no_torch() -> None:
    modules = sorted((str(p.parent), p.stem) for p in UNIT.rglob("test_*.py") if p.stem != "test_no_torch")
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(UNIT.parent), json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    importing = set(json.loads(r.stdout.strip().splitlines()[-1]))
    assert importing - KNOWN.keys() == set(), f"these unit test modules import torch: {importing - KNOWN.keys()}"
    assert KNOWN.keys() - importing == set(), f"no longer import torch, remove from KNOWN: {KNOWN.keys() - importing}"
