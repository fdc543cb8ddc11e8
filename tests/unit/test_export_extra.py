"""`edge-lstm-export` on an install without the export extra: one line saying how to get it, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs the real entry point with torch, onnx and onnxscript unimportable, as on `pip install edge-lstm`.
BLOCKED = """
import sys
from importlib.abc import MetaPathFinder

class Blocked(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "onnx", "onnxscript"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocked())
from edge_lstm_export.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "normal.csv", "--out", "m.onnx"],
        ["torch", "--factory", "m:f", "--weights", "w.pt", "--features", "a", "--out", "m.onnx"],
    ],
)
def test_without_the_export_extra(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "normal.csv").write_text("a\n1\n2\n")
    r = run(args, tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "edge-lstm-export: needs the export extra: pip install 'edge-lstm[export]'\n"
    assert not (tmp_path / "m.onnx").exists()


def test_version_and_help_work_without_the_extra(tmp_path: Path) -> None:
    from importlib.metadata import version

    r = run(["--version"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"edge-lstm-export {version('edge-lstm')}"
    r = run(["fit", "--help"], tmp_path)
    assert r.returncode == 0 and "--out" in r.stdout, r.stderr
