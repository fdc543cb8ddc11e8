"""The Channel shape (edge_lstm/scoring/channel.py): a channel added by its module plus one registration
line reaches every stage (state table, flags, payload, checkpointed row, inspect), as docs/architecture.md
("Adding a channel") says; and rows stored under the old `dev.*` column names restore."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import pytest
from support.paths import ROOT

from edge_lstm import Engine, Reading, Result, encode, load_model
from edge_lstm.contract import ModelMeta
from edge_lstm.durable.spill import SqliteSpill
from edge_lstm.scoring import BaseChannel, Batch, Scorer, Scores, ScoringConfig, channels
from edge_lstm.state import Column

V = TypeVar("V")


class Jump(BaseChannel):
    """jump: the first feature moved more than `limit` since the stream's previous reading (a toy)."""

    name: ClassVar[str] = "jump"
    fields: ClassVar[tuple[str, ...]] = ("jump",)

    @classmethod
    def build(cls, meta: ModelMeta, config: ScoringConfig) -> Jump:
        return cls()

    def __init__(self, limit: float = 5.0) -> None:
        self.limit = limit
        self.columns = {"jump.last": Column((), np.float64, np.nan)}

    def threshold(self, cols: Mapping[str, np.ndarray]) -> float:
        return self.limit

    def update(self, batch: Batch) -> Scores:
        step = np.abs(batch.values[:, 0] - batch.cols["jump.last"])  # NaN for a stream's first reading
        batch.cols["jump.last"] = batch.values[:, 0]
        return Scores(step > self.limit, {"jump": [None if np.isnan(v) else v for v in step.tolist()]})

    def describe(self, cols: Mapping[str, np.ndarray], ready: bool) -> dict[str, object]:
        return {"jump_last": float(cols["jump.last"])}


def readings(n: int = 40, jump_at: int = 30) -> list[Reading]:
    rng = np.random.default_rng(3)
    out = []
    for t in range(n):
        temp = 40.0 + rng.normal(0, 0.05) + (20.0 if t == jump_at else 0.0)
        out.append(Reading("m", 1_700_000_000.0 + t, (temp, 0.48 + rng.normal(0, 0.01), 9.7 + rng.normal(0, 0.1))))
    return out


def test_a_registered_toy_channel_reaches_every_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(None)
    plain = Engine(model).process(readings())
    monkeypatch.setattr(channels, "REGISTRY", [*channels.REGISTRY, Jump])  # the one registration line
    engine = Engine(model)
    assert "jump.last" in engine.table.columns
    out = engine.process(readings())
    assert all(isinstance(r, Result) for r in out)
    payloads = [json.loads(encode(r)) for r in out]  # type: ignore[arg-type]
    assert payloads[0]["jump"] is None and payloads[30]["jump"] > 19.0 and payloads[31]["jump"] > 19.0
    assert payloads[30]["anomaly"] and payloads[31]["anomaly"]  # the toy's flags are the reading's
    # Every other channel's output is untouched by the toy channel.
    for i, (p, q) in enumerate(zip(payloads, (json.loads(encode(r)) for r in plain))):  # type: ignore[arg-type]
        del p["jump"]
        if i in (30, 31):  # the jump and its way back: flagged by the toy
            q["anomaly"] = True
        assert p == q, i
    # Its state is the stream's: in the detached row (checkpoints, spills) and in inspect.
    assert engine.table.row("m").columns["jump.last"] == pytest.approx(readings()[-1].values[0])
    described = engine.describe_stream("m")
    assert described is not None and described["jump_last"] == pytest.approx(readings()[-1].values[0])


def test_a_channel_column_must_carry_its_name() -> None:
    class Bad(Jump):
        name: ClassVar[str] = "bad"

    with pytest.raises(ValueError, match=r"channel 'bad': column 'jump.last' must be new and named bad\.\*"):
        Scorer(load_model(None).meta, channels=[*channels.REGISTRY, Bad])


def test_architecture_doc_lists_every_registered_channel() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc[doc.index("## Scoring channels") :]
    for kind in channels.REGISTRY:
        module = kind.__module__.rsplit(".", 1)[-1]
        assert re.search(rf"\| `{kind.name}` \| `channels/{module}\.py` \|", table), kind.name


def old_names(columns: Mapping[str, V]) -> dict[str, V]:
    """The columns as the version before the rename named them."""
    return {("dev." + k[len("deviation.") :] if k.startswith("deviation.") else k): v for k, v in columns.items()}


def test_rows_stored_under_the_old_dev_names_restore() -> None:
    """A checkpoint or spill written before the deviation channel's columns were named `deviation.*`."""
    model = load_model(None)
    cfg = ScoringConfig(baseline=20)
    first, rest = readings(60)[:40], readings(60)[40:]
    engine = Engine(model, scoring=cfg)
    engine.process(first)
    row = engine.table.row("m")
    old = old_names(row.columns)
    assert any(k.startswith("dev.") for k in old)
    restored = Engine(model, scoring=cfg)
    restored.table.restore(replace(row, columns=old))
    for k, v in row.columns.items():
        np.testing.assert_array_equal(restored.table.row("m").columns[k], v)
    assert [encode(r) for r in restored.process(rest)] == [encode(r) for r in engine.process(rest)]  # type: ignore[arg-type]


def test_a_spill_written_under_the_old_dev_names_keeps_its_rows(tmp_path: Path) -> None:
    model = load_model(None)
    engine = Engine(model, scoring=ScoringConfig(baseline=20))
    engine.process(readings(40))
    row = engine.table.row("m")
    specs = engine.table.column_specs
    old_specs = old_names(specs)
    old_row = replace(row, columns=old_names(row.columns))
    shapes, n_out = model.state_shapes, len(model.meta.output.names)
    old = SqliteSpill(tmp_path / "s.db", shapes, n_out, columns=old_specs, model_sha256="x")
    old.put([old_row])
    old.close()
    new = SqliteSpill(tmp_path / "s.db", shapes, n_out, columns=specs, model_sha256="x")
    assert new.discarded == 0
    got = new.get("m", row.last_ts + 1)
    assert got is not None
    for k, v in row.columns.items():
        np.testing.assert_array_equal(got.columns[k], v)
    new.close()
