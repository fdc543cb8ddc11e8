"""scripts/check_paho.py (run by ./dev check) finds touches of paho's internals outside the paho adapter."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_paho", ROOT / "scripts" / "check_paho.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_paho"] = mod
    spec.loader.exec_module(mod)
    return mod


CHECK = _script()
PRIVATE = CHECK.paho_private_names()


def _findings(tmp_path: Path, source: str) -> list[str]:
    path = tmp_path / "module.py"
    path.write_text(source)
    return list(CHECK.findings(path, PRIVATE))


def test_paho_private_names_are_read_from_paho_itself() -> None:
    assert {"_published", "_topic", "_out_messages", "_packet_queue", "_sock"} <= PRIVATE
    assert not any(n.startswith("__") or not n.startswith("_") for n in PRIVATE)


def test_a_private_member_of_a_paho_object_is_found(tmp_path: Path) -> None:
    (hit,) = _findings(tmp_path, "def done(info):\n    return info._published\n")
    assert "info._published reaches paho's private _published" in hit and ":2:" in hit


def test_a_subclass_of_a_paho_class_is_found(tmp_path: Path) -> None:
    src = "import paho.mqtt.client as paho\n\n\nclass Mine(paho.Client):\n    pass\n"
    (hit,) = _findings(tmp_path, src)
    assert "class Mine subclasses paho's paho.Client" in hit
    (hit,) = _findings(tmp_path, "from paho.mqtt.client import Client as C\n\n\nclass Mine(C):\n    pass\n")
    assert "subclasses paho's C" in hit


def test_a_private_import_from_paho_is_found(tmp_path: Path) -> None:
    (hit,) = _findings(tmp_path, "from paho.mqtt.client import _socketpair_compat\n")
    assert "imports paho's private _socketpair_compat" in hit


def test_own_members_and_public_api_are_not_findings(tmp_path: Path) -> None:
    src = (
        "import paho.mqtt.client as paho\n\n\nclass Link:\n    def __init__(self):\n"
        "        self._sock = None\n        self.client = paho.Client()\n\n"
        "    def go(self):\n        return self._sock, self.client.is_connected(), cls_of(self)\n"
    )
    assert _findings(tmp_path, src) == []


def test_the_tree_keeps_paho_in_its_adapter() -> None:
    assert CHECK.main() == 0
