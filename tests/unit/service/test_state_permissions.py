"""The state directory is 0700 and its files 0600 whatever the umask (issue 20): stream ids, states and
readings are nobody else's on a shared Pi. Checked under umask 022 with the daemon's own start-up
(open_state_dir, open_durable: durable state, journal, checkpoint, spill store) and for files an earlier version left
world-readable; and the systemd units ask for the same."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from support.paths import ROOT

from edge_lstm.alarm import table_columns
from edge_lstm.engine import Engine
from edge_lstm.onnx_model import load_model
from edge_lstm.scoring import Scorer
from edge_lstm.service.config import load_settings
from edge_lstm.service.state import open_durable, open_state_dir


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_state_dir_0700_files_0600_under_umask_022(step_model_path: Path, tmp_path: Path, umask_022: None) -> None:
    state = tmp_path / "var" / "state"
    state.mkdir(parents=True)
    (state / "journal.0").write_bytes(b"")  # left by an earlier version: 0644 under this umask
    assert mode(state) == 0o755 and mode(state / "journal.0") == 0o644
    settings = load_settings(None, model=str(step_model_path), state_dir=str(state))
    model = load_model(step_model_path)
    log = structlog.get_logger()
    scoring = settings.scoring.config()
    opened = open_state_dir(settings, model, table_columns(Scorer(model.meta, scoring).columns), log)
    spill = opened.spill
    engine = Engine(model, max_streams=2, spill=spill, scoring=scoring)
    durable = open_durable(settings, opened, engine, log)
    assert durable is not None and spill is not None
    from edge_lstm import Reading

    engine.process([Reading(f"s{i}", 1_764_000_000.0, (1.0, 2.0, 3.0)) for i in range(4)])  # spills two
    durable.record((1, Reading("s3", 1_764_000_001.0, (1.0, 2.0, 3.0))) for _ in range(1))
    durable.checkpoint()
    durable.close(final_checkpoint=True)
    spill.close()
    files = [p for p in state.iterdir() if p.is_file()]
    names = {p.name.split(".")[0] for p in files}
    assert {"checkpoint", "journal", "spill", "lock"} <= names
    assert mode(state) == 0o700
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


@pytest.mark.parametrize("unit", ["edge-lstm.service", "edge-lstm@.service"])
def test_systemd_units_ask_for_private_state(unit: str) -> None:
    text = (ROOT / "systemd" / unit).read_text()
    assert "StateDirectoryMode=0700" in text and "UMask=0077" in text
