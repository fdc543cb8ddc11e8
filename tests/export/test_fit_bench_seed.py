"""bench/quality.py --seed: every model it fits uses that `fit` seed (docs/quality.md, "Seeds" and
"Training: weight averaging (seed variance)" are measured with it); without it, fit's default."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="needs torch (the export extra)")

import edge_lstm_export.fit as fit_module

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402

pytestmark = pytest.mark.export


def _seeds_fitted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str]) -> list[int]:
    seeds: list[int] = []

    def fake_fit_csv(csv: Path, out: Path, *, config: fit_module.FitConfig, **kw: Any) -> None:
        seeds.append(config.seed)
        assert config == fit_module.FitConfig(seed=config.seed)  # only the seed differs from fit's defaults

    monkeypatch.setattr(fit_module, "fit_csv", fake_fit_csv)
    monkeypatch.setattr(quality, "FIT_SEED", quality.FIT_SEED)  # restored after the test
    # No SKAB here: main stops (exit 2) before fitting; the seed is set by then.
    monkeypatch.setattr(sys, "argv", ["quality.py", "--skab", str(tmp_path / "none"), "--only", "skab-a", *argv])
    monkeypatch.setattr(quality, "FIT_CACHE", quality.FIT_CACHE)  # main() sets it; restored after the test
    assert quality.main() == 2
    monkeypatch.setattr(quality, "FIT_CACHE", None)  # no model cache (it hashes the CSV): fit is called
    quality.fit(tmp_path / "x.csv", tmp_path / "m.onnx", ["a"])
    return seeds


def test_seed_reaches_every_fit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert _seeds_fitted(monkeypatch, tmp_path, ["--seed", "3"]) == [3]


def test_default_seed_is_fits_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert _seeds_fitted(monkeypatch, tmp_path, []) == [fit_module.FitConfig().seed]
