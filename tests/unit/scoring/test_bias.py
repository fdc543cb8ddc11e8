"""The bias channel (edge_lstm/scoring/channels/bias.py) against a numpy reference and known laws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_lstm.result import Result
from edge_lstm.scoring import ScoringConfig
from edge_lstm.scoring.channels.bias import Bias


def fresh(b: Bias, n: int) -> dict[str, np.ndarray]:
    return {k: np.broadcast_to(np.asarray(c.init, c.dtype), (n, *c.shape)).copy() for k, c in b.columns.items()}


def feed(b: Bias, r: np.ndarray, warm_from: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """[T, S, F] residuals, one round per t → (columns, bias [T, S], the threshold each was compared with)."""
    T, S, _ = r.shape
    cols = fresh(b, S)
    out, hs = [], []
    for t in range(T):
        hs.append(cols["bias.h"].copy())
        warm = np.full(S, t >= warm_from)
        out.append(b.step(cols, r[t], np.full(S, t), warm, np.zeros(S, bool)))
    return cols, np.array(out), np.array(hs)


def test_bias_equals_the_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    T, F, base = 600, 3, 200
    r = rng.multivariate_normal([0.1, -0.2, 0.0], [[1, 0.4, 0], [0.4, 2, 0.1], [0, 0.1, 0.5]], size=T)
    cfg = ScoringConfig(baseline=base, influence=0)
    cols, out, _ = feed(Bias(F, cfg), r[:, None, :], warm_from=5)

    # Reference: the MEWMA written the obvious way.
    x = r[5:base]
    m = x.mean(0)
    cov = (x - m).T @ (x - m) / len(x)
    cov = 0.9 * cov + 0.1 * np.diag(np.diag(cov)) + 1e-4 * np.eye(F)
    a = cfg.alpha
    # λ: the spread of the EWMA of the baseline's residuals (after `span` of them) against white noise's.
    zr, zs = np.zeros(F), []
    for k, rk in enumerate(x):
        zr = (1 - a) * zr + a * rk
        if k + 1 > cfg.span:
            zs.append(zr)
    zc = np.cov(np.array(zs).T, bias=True)
    lam = max(1.0, float(np.trace(np.linalg.inv(cov) @ zc)) * (2 - a) / a / F)
    P = np.linalg.inv(cov) / lam
    z = np.zeros(F)
    want = np.zeros(T)
    for t in range(base, T):
        z = (1 - a) * z + a * (r[t] - m)
        want[t] = z @ P @ z * (2 - a) / a / F
    np.testing.assert_allclose(cols["bias.P"][0], P, rtol=1e-7)
    np.testing.assert_allclose(out[:, 0], want, rtol=1e-7, atol=1e-12)
    assert not out[:base].any()  # nothing before the baseline is learned


def test_white_residuals_rarely_cross_and_a_small_persistent_offset_does() -> None:
    rng = np.random.default_rng(1)
    T, S, F = 3000, 20, 4
    r = rng.normal(size=(T, S, F))
    # Half the streams: one output off by 3 sd from reading 2000 on. At steady state bias = 3² (2 − α) / α
    # / F = 67, above the prior's threshold (8 × the χ²(4)/4 quantile at 1 − 10⁻⁴ = 47), while each
    # residual alone stays within the normal range of the instant score.
    r[2000:, 10:, 1] += 3.0
    _, out, h = feed(Bias(F, ScoringConfig(baseline=300)), r)
    flags = out > h
    assert flags[300:, :10].mean() < 1e-3  # normal streams: about the risk (1e-4), not more
    assert flags[2100:, 10:].mean() > 0.95  # the offset scores for as long as it lasts
    assert flags[:2000, 10:][300:].mean() < 1e-3


def test_wandering_residuals_are_scaled_by_their_own_baseline_spread() -> None:
    """Autocorrelated residuals (a model that fits the stream less well): the EWMA of an AR(1) with
    φ = 0.9 spreads (1 + φ(1 − α)) / (1 − φ(1 − α)) = 11.7× wider than white residuals' (span 30). λ,
    measured in the baseline, keeps them out of the tail; white residuals get λ ≈ 1."""
    rng = np.random.default_rng(5)
    T, S, F = 3000, 20, 2
    e = rng.normal(size=(T, S, F))
    r = np.zeros_like(e)
    for t in range(1, T):
        r[t] = 0.9 * r[t - 1] + e[t]
    cfg = ScoringConfig(baseline=300)

    def lam(x: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
        """C⁻¹ (shrunk, floored, per stream, as bias.py) against the learned P = C⁻¹ / λ."""
        out = []
        for k in range(S):
            c = np.cov(x[1:300, k].T, bias=True)
            c = 0.9 * c + 0.1 * np.diag(np.diag(c)) + 1e-4 * np.eye(F)
            out.append(np.trace(np.linalg.inv(c)) / np.trace(cols["bias.P"][k]))
        return np.array(out)

    cols, out, h = feed(Bias(F, cfg), r)
    assert 6 < np.median(lam(r, cols)) < 20
    assert (out[300:] > h[300:]).mean() < 0.01
    cols_w, _, _ = feed(Bias(F, cfg), e)  # white residuals
    assert np.median(lam(e, cols_w)) < 1.5


def test_one_wild_residual_does_not_flag_the_readings_after_it() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(size=(1000, 1, 2))
    r[700, 0, 0] = 1e4  # a glitch
    _, bounded, h = feed(Bias(2, ScoringConfig(baseline=300)), r)
    assert not (bounded[701:, 0] > h[701:, 0]).any()
    _, unbounded, h2 = feed(Bias(2, ScoringConfig(baseline=300, influence=0)), r)
    assert (unbounded[701:760, 0] > h2[701:760, 0]).all()  # what the bound prevents


def test_a_baseline_shorter_than_the_warm_up_turns_the_channel_off() -> None:
    r = np.random.default_rng(3).normal(size=(400, 1, 3)) + 5.0
    _, out, _ = feed(Bias(3, ScoringConfig(baseline=10)), r, warm_from=9)  # 1 residual < F + 1
    assert not out.any()


def test_the_engine_publishes_bias_and_flags_a_persistent_offset(tmp_path: Path) -> None:
    from support.models import make_step_model

    from edge_lstm import Engine, Reading, load_model
    from edge_lstm.result import encode
    from edge_lstm.scoring import ScoringConfig

    model = load_model(make_step_model(tmp_path / "m.onnx"))
    engine = Engine(model, scoring=ScoringConfig(baseline=100))
    rng = np.random.default_rng(4)
    out = []
    for t in range(400):
        v = rng.normal(0, 0.1, 3) + [1.0, 2.0, 3.0]
        out += engine.process([Reading("s", 1_700_000_000.0 + t, tuple(v.tolist()))])
    assert all(o.bias is None and o.bias_threshold is None for o in out[:99])  # type: ignore[union-attr]
    assert all(o.bias is not None and o.bias_threshold is not None for o in out[100:])  # type: ignore[union-attr]
    doc = json.loads(encode(out[-1]))  # type: ignore[arg-type]
    last = out[-1]
    assert isinstance(last, Result) and last.bias is not None and last.bias_threshold is not None
    # published to 6 significant digits
    assert doc["bias"] == float(f"{last.bias:.6g}") and doc["bias_threshold"] == float(f"{last.bias_threshold:.6g}")
    assert doc == json.loads(json.dumps(out[-1].to_dict()))  # type: ignore[union-attr]
    state = engine.describe_stream("s")  # the `inspect` command: the EWMA as it stands after the last reading
    # the state table stores the EWMA in float32 (docs/performance.md, round 7): equal to that precision
    assert state is not None and state["bias"] == pytest.approx(out[-1].bias, rel=1e-6)  # type: ignore[union-attr]
    assert state["bias_threshold"] is not None
