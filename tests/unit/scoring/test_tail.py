"""The per-stream thresholds on known distributions: the peaks-over-threshold tail fit (scoring/stats.py) and the
forecast score's extrapolated threshold (scoring/channels/forecast.py), against numpy references and fresh samples."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from edge_lstm.scoring import ScoringConfig
from edge_lstm.scoring import stats as tail
from edge_lstm.scoring.channels.deviation import Deviation
from edge_lstm.scoring.channels.forecast import effective_level, extrapolate


def fit(x: np.ndarray, prior: tail.TailPrior, q: float) -> float:
    cols = {k: np.zeros(1) for k in tail.tail_columns("t")}
    for chunk in np.array_split(x, 7):  # counted in pieces, as streams count reading by reading
        for v in chunk:
            tail.tail_add(cols, "t", np.array([v]), np.array([True]), prior.u)
    return float(tail.tail_threshold(cols["t.n"], cols["t.peaks"], cols["t.excess"], prior, q)[0])


def reference(x: np.ndarray, prior: tail.TailPrior, q: float) -> float:
    """The posterior-mean exponential POT quantile, written directly from the samples."""
    y = x[x > prior.u] - prior.u
    zeta = (len(y) + prior.m0) / (len(x) + prior.m0 / prior.p_u)
    sigma = (y.sum() + prior.m0 * prior.sigma0) / (len(y) + prior.m0)
    return float(prior.u + sigma * math.log(max(zeta / q, 1.0)))


@pytest.mark.parametrize(
    "name, draw",
    [
        ("exponential", lambda rng, n: rng.exponential(1.0, n)),
        ("chi2(8)/8", lambda rng, n: rng.chisquare(8, n) / 8),
        ("chi2(30)/30", lambda rng, n: rng.chisquare(30, n) / 30),
        ("gamma(3)", lambda rng, n: rng.gamma(3.0, 1.0, n)),
    ],
)
def test_the_fitted_threshold_is_exceeded_at_the_target_risk(
    name: str, draw: Callable[[np.random.Generator, int], np.ndarray]
) -> None:
    # Laws of the Gumbel domain (exponential tails), as the smoothed deviation's is: a weak prior far
    # from the truth, 20,000 samples fitted, the threshold checked on 4 million fresh ones.
    rng = np.random.default_rng(7)
    q = 1e-3
    x = draw(rng, 20_000)
    u = float(np.quantile(x, 0.9))
    prior = tail.TailPrior.through(u, 0.1, 3.0 * u, q, m0=2.0)  # prior threshold: 3u, far off
    h = fit(x, prior, q)
    assert h == pytest.approx(reference(x, prior, q), rel=1e-12)
    rate = np.mean(draw(rng, 4_000_000) > h)
    # Within 60 % above, a factor 2 below: a gamma law's mean excess still shrinks slowly above its 0.9
    # quantile, so an exponential tail fitted there errs on the safe side (fewer false flags than q).
    assert q / 2 < rate < q * 1.6, f"{name}: exceedance rate {rate:.2e} for a target of {q:.0e}"


def test_without_peaks_the_threshold_is_the_prior_law_and_data_move_it_the_right_way() -> None:
    q = 1e-4
    prior = tail.TailPrior.through(1.3, 0.1, 2.26, q, m0=5.0)
    zero = np.zeros(3)
    h = tail.tail_threshold(zero, zero, zero, prior, q)
    np.testing.assert_allclose(h, 2.26, rtol=1e-12)
    # 100 readings: none above u (a quiet stream), the prior's share, and a noisy stream's three times that.
    n = np.full(3, 100.0)
    peaks = np.array([0.0, 10.0, 30.0])
    excess = peaks * prior.sigma0
    lo, same, hi = tail.tail_threshold(n, peaks, excess, prior, q)
    assert lo < 2.26 and same == pytest.approx(2.26, rel=1e-12) and hi > 2.26


def test_the_survival_function_and_the_threshold_agree() -> None:
    q = 1e-4
    prior = tail.TailPrior.through(1.3, 0.1, 2.26, q, m0=5.0)
    n, peaks, excess = np.array([250.0]), np.array([31.0]), np.array([9.5])
    h = tail.tail_threshold(n, peaks, excess, prior, q)
    np.testing.assert_allclose(tail.tail_survival(h, n, peaks, excess, prior), q, rtol=1e-9)
    assert np.isnan(tail.tail_survival(np.array([1.0]), n, peaks, excess, prior)[0])  # below u: the body's


def test_a_stream_fits_its_own_tail_once_after_its_baseline_unflagged_readings_only() -> None:
    rng = np.random.default_rng(3)
    F, T = 3, 900
    cfg = ScoringConfig(baseline=300, tail_window=100, track=0)
    b = Deviation(F, cfg)
    cols = {k: np.broadcast_to(np.asarray(c.init, c.dtype), (2, *c.shape)).copy() for k, c in b.columns.items()}
    u = rng.normal(size=(T, 2, F))
    u[:, 1] *= np.where(np.arange(T) < 300, 1.0, 1.5)[:, None]  # stream 1 is noisier after its baseline
    u[450:, 0] += 6.0  # stream 0: a fault after its window
    seen = []
    for t in range(T):
        h_before = cols["deviation.h"].copy()
        e, _, _ = b.step(cols, u[t], np.full(2, t), np.zeros(2, bool))
        seen.append(h_before)
        if 300 <= t < 400:
            assert np.all(cols["deviation.tail.n"] <= t - 299)  # at most the window's readings so far
    hs = np.asarray(seen)
    assert np.all(hs[:301] == b.h)  # the prior's threshold until the first fitted reading
    np.testing.assert_array_equal(hs[401:], np.broadcast_to(hs[401], hs[401:].shape))  # frozen after
    assert cols["deviation.tail.n"][0] == 100  # stream 0: normal in its window, every reading fitted
    assert hs[-1, 1] > hs[-1, 0]  # the noisier stream has the higher threshold


def test_effective_level_of_a_calibration_maximum() -> None:
    assert effective_level(0.999, 80) == pytest.approx(80 / 81)
    assert effective_level(0.999, 100_000) == 0.999
    assert effective_level(0.99, None) == 0.99
    assert effective_level(None, 80) is None


@pytest.mark.parametrize("outputs", [1, 3, 8])
def test_the_extrapolated_score_threshold_meets_its_risk_on_gaussian_residuals(outputs: int) -> None:
    # score = RMS of `outputs` standard normal z: calibrate a threshold as the calibration does (the
    # 0.999 quantile of 80 held-out scores, in effect their maximum), carry it to 1e-3 and check the
    # exceedance rate on fresh scores; the median over many calibrations (one is a noisy maximum).
    rng = np.random.default_rng(11)
    target = 1e-3
    fresh = np.sqrt(np.mean(rng.normal(size=(2_000_000, outputs)) ** 2, axis=1))
    rates, raw = [], []
    for _ in range(200):
        cal = np.sqrt(np.mean(rng.normal(size=(80, outputs)) ** 2, axis=1))
        thr = float(np.quantile(cal, 0.999))
        h = extrapolate(thr, effective_level(0.999, 80) or 0.0, target, outputs)
        rates.append(np.mean(fresh > h))
        raw.append(np.mean(fresh > thr))
    # n / (n + 1), the mean level of a maximum, is a little low for its median (1 − ln 2 / n): the
    # threshold errs on the safe side, within a factor 2.5.
    assert target / 2.5 < np.median(rates) < target * 1.5
    assert np.median(raw) > 5 * target  # the raw maximum of 80 scores is far below the 0.999 quantile


def test_extrapolation_to_its_own_level_is_the_identity() -> None:
    assert extrapolate(2.5, 0.999, 1e-3, 8) == pytest.approx(2.5, rel=1e-12)
    assert extrapolate(2.5, 0.99, 1e-4, 8) > 2.5
