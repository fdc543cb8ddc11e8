"""README's configuration reference and the example config stay in step with the settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge_lstm.service.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        t = field.annotation
        if isinstance(t, type) and issubclass(t, BaseModel):
            out += keys(t, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_every_setting_is_in_the_readme_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [k for k in keys(Settings) if f"`{k}`" not in readme and f"`{k.rsplit('.', 1)[-1]}`" not in readme]
    assert not missing, f"README configuration reference lacks {missing}"


def test_example_config_is_valid_and_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)
    example = ROOT / "systemd" / "config.toml"
    load_settings(example)  # refuses unknown keys and bad values
    text = example.read_text()
    absent = [
        k for k in keys(Settings) if k.rsplit(".", 1)[-1] + " =" not in text and k.rsplit(".", 1)[-1] + "=" not in text
    ]
    assert not absent, f"systemd/config.toml does not show {absent}"


def test_every_setting_has_a_description_and_a_documented_default() -> None:
    from edge_lstm.service.config import reference

    rows = list(reference.rows())  # raises naming a setting without description or documented default
    assert [r[0] for r in rows] == keys(Settings)
    assert all(len(desc) > 10 for _, _, _, desc in rows)


def test_readme_configuration_table_is_generated_and_current() -> None:
    """`./dev docs` writes it; this fails when a setting changed and the table was not regenerated."""
    from edge_lstm.service.config import reference

    readme = (ROOT / "README.md").read_text()
    assert reference.update_text(readme) == readme, "README's configuration table is stale: run ./dev docs"


def test_every_rejection_reason_has_a_hint_and_the_readme_example_is_the_codes() -> None:
    """README's rejection reasons are the ones with hints, and its example payload is what the code sends."""
    import json
    import re

    from edge_lstm.hints import HINTS
    from edge_lstm.reading import REASONS, Rejection
    from edge_lstm.result import encode_rejection

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Rejections**") :]
    codes = section[section.index("state:\n") : section.index("A reading whose")]
    assert sorted(re.findall(r"`([a-z0-9_]+)`", codes)) == sorted(REASONS) == sorted(HINTS)
    example = json.loads(section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)])
    rebuilt = encode_rejection(Rejection(example["stream"], example["reason"], example["detail"]), example["topic"])
    assert json.loads(rebuilt) == example


def _logged_at(levels: tuple[str, ...]) -> set[str]:
    """Event names the code logs at one of `levels` (`log.warning("event", ...)` calls)."""
    import ast

    found = set()
    for path in (ROOT / "edge_lstm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in levels:
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    found.add(node.args[0].value)
    return found


def test_operations_log_levels_table_matches_the_code() -> None:
    ops = (ROOT / "docs" / "operations.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in ops.splitlines() if line.startswith(("| warning", "| error"))}
    assert set(rows) == {"warning", "error"}
    for level, events in (("warning", _logged_at(("warning",))), ("error", _logged_at(("error", "critical")))):
        missing = sorted(e for e in events if f"`{e}`" not in rows[level])
        assert not missing, f"docs/operations.md, Log levels: {level} lacks {missing}"


def test_readme_replay_columns_are_the_codes() -> None:
    from edge_lstm.cli.replay import RESULT_COLUMNS

    readme = (ROOT / "README.md").read_text()
    start = readme.index("it writes one row per reading (`") + len("it writes one row per reading (`")
    listed = readme[start : readme.index("`", start)].replace("\n", " ").split(", ")
    assert listed == [*RESULT_COLUMNS, "prediction_<feature>..."]


def test_readme_example_result_is_what_the_packaged_model_publishes() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import gen_docs

    readme = (ROOT / "README.md").read_text()
    assert gen_docs.example_matches(readme), "README's example result is stale: run ./dev docs"
    broken = readme.replace('"threshold":', '"threshold":1', 1)
    assert not gen_docs.example_matches(broken)
