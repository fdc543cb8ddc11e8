"""The shared scoring statistics (edge_lstm/scoring/stats.py) against scipy's reference values (scipy only
here: the daemon has none)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special  # type: ignore[import-untyped]
from scipy import stats as sps

from edge_lstm.scoring import stats

PROBABILITIES = [1e-10, 1e-6, 1e-4, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 0.9999, 1 - 1e-6, 1 - 1e-10]


@pytest.mark.parametrize("p", PROBABILITIES)
def test_ndtri_matches_scipy(p: float) -> None:
    assert stats.ndtri(p) == pytest.approx(float(special.ndtri(p)), rel=1e-12, abs=1e-12)


def test_ndtr_matches_scipy_within_its_documented_error() -> None:
    z = np.linspace(-8.0, 8.0, 3201)
    got = stats.ndtr(z)
    assert np.abs(got - special.ndtr(z)).max() < 1.5e-7  # Abramowitz & Stegun 7.1.26's bound
    assert got[1600] == pytest.approx(0.5, abs=1e-9)  # z = 0


# Wilson–Hilferty's relative error against the exact χ² quantile grows in the far tail and for few
# degrees of freedom (measured with scipy: 3.5 % at k = 3, p = 0.9999; 0.07 % at k = 100). The channels
# use k = F (bias, the score's extrapolation: 1-10 outputs) and k ≈ 11 F (the deviation's EWMA).
WH_TOLERANCE = [(3.0, 0.04), (10.0, 0.012), (30.0, 0.004), (100.0, 0.001), (400.0, 2e-4)]


@pytest.mark.parametrize(("k", "rel"), WH_TOLERANCE)
def test_chi2k_quantile_matches_scipy(k: float, rel: float) -> None:
    for p in (0.5, 0.9, 0.99, 0.999, 0.9999):
        assert stats.chi2k_quantile(p, k) == pytest.approx(float(sps.chi2.ppf(p, k)) / k, rel=rel), p


@pytest.mark.parametrize(("k", "rel"), WH_TOLERANCE)
def test_chi2k_cdf_matches_scipy(k: float, rel: float) -> None:
    x = np.linspace(0.05, 4.0, 80)
    assert np.abs(stats.chi2k_cdf(x, k) - sps.chi2.cdf(x * k, k)).max() < 2 * rel
    below, zero = stats.chi2k_cdf(np.array([-1.0, 0.0]), k)
    assert below == zero < 2 * rel  # x < 0 counts as 0 (where Wilson–Hilferty has a little mass)


def test_chi2k_quantile_and_cdf_are_inverse() -> None:
    for k in (3.0, 11.25, 100.0):
        for p in (0.1, 0.5, 0.9, 0.999):
            assert stats.chi2k_cdf(np.array([stats.chi2k_quantile(p, k)]), k)[0] == pytest.approx(p, abs=2e-7)


def test_chi2k_quantile_floor() -> None:
    # For k = 1 and a small p the cube's base is negative: floored (0 by default).
    assert stats.chi2k_quantile(1e-6, 1.0) == 0.0
    assert stats.chi2k_quantile(1e-6, 1.0, floor=1e-4) == pytest.approx(1e-12)


def test_shrunk() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 50, 3))
    cov = np.einsum("bni,bnj->bij", a, a) / 50
    eye = np.eye(3)
    np.testing.assert_allclose(stats.shrunk(cov, 0.0, 0.0), cov)
    np.testing.assert_allclose(stats.shrunk(cov, 1.0, 0.0), cov * eye)  # all the way to the diagonal
    out = stats.shrunk(cov, 0.1, 1e-4)
    np.testing.assert_allclose(out, 0.9 * cov + 0.1 * cov * eye + 1e-4 * eye)
    assert (np.linalg.eigvalsh(stats.shrunk(np.zeros((3, 3)), 0.1, 1e-4)) > 0).all()  # a constant: floored


def test_tail_prior_alone_gives_its_own_quantile() -> None:
    prior = stats.TailPrior.through(u=1.3, p_u=0.1, h0=2.26, q=1e-4, m0=5.0)
    zero = np.zeros(1)
    assert stats.tail_threshold(zero, zero, zero, prior, 1e-4)[0] == pytest.approx(2.26, rel=1e-12)
    # The prior's tail is exponential above u: its survival at h0 is q, at u it is p_u.
    assert stats.tail_survival(np.array([2.26]), zero, zero, zero, prior)[0] == pytest.approx(1e-4, rel=1e-12)
    assert stats.tail_survival(np.array([1.3]), zero, zero, zero, prior)[0] == pytest.approx(0.1, rel=1e-12)
    assert np.isnan(stats.tail_survival(np.array([1.0]), zero, zero, zero, prior)[0])  # below u: the body's
    with pytest.raises(ValueError, match="tail prior"):
        stats.TailPrior.through(u=1.3, p_u=0.1, h0=1.0, q=1e-4, m0=5.0)  # h0 below u


def test_tail_fit_with_many_peaks_is_scipy_exponential_tail() -> None:
    """With a negligible prior, the fitted tail is ζ·expon(u, σ̂) with ζ = N/n and σ̂ the mean excess
    (the γ = 0 generalised Pareto law): threshold and survival as scipy's."""
    rng = np.random.default_rng(1)
    x = rng.exponential(2.0, 20_000)
    u, q = 3.0, 1e-4
    prior = stats.TailPrior.through(u=u, p_u=0.2, h0=8.0, q=q, m0=1e-9)
    cols = {k: np.zeros(1) for k in stats.tail_columns("t")}
    cols["t.h"] = np.full(1, 8.0)
    for chunk in np.array_split(x, 20):
        for v in chunk:
            stats.tail_add(cols, "t", np.array([v]), np.array([True]), u)
    over = x[x > u]
    zeta, sigma = len(over) / len(x), float((over - u).mean())
    n, peaks, excess = cols["t.n"], cols["t.peaks"], cols["t.excess"]
    want = float(sps.genpareto.isf(q / zeta, c=0.0, loc=u, scale=sigma))
    assert stats.tail_threshold(n, peaks, excess, prior, q)[0] == pytest.approx(want, rel=1e-6)
    z = np.array([4.0, 10.0, 20.0])
    want_sf = zeta * sps.genpareto.sf(z, c=0.0, loc=u, scale=sigma)
    np.testing.assert_allclose(stats.tail_survival(z, n, peaks, excess, prior), want_sf, rtol=1e-6)
    # And the exponential law's own tail (the sample's): within sampling error of the true 2 ln(1/q).
    assert want == pytest.approx(2.0 * np.log(1 / q), rel=0.05)


def test_tail_learn_unflagged_skips_readings_above_the_threshold() -> None:
    prior = stats.TailPrior.through(u=1.0, p_u=0.1, h0=3.0, q=1e-3, m0=5.0)
    cols = {**{k: np.zeros(2) for k in stats.tail_columns("c.tail")}, "c.h": np.full(2, 3.0)}
    # Stream 0's reading is above its threshold (flagged): not fitted; stream 1's is fitted.
    stats.tail_learn_unflagged(cols, "c.tail", "c.h", np.array([5.0, 2.0]), np.array([True, True]), prior, 1e-3)
    assert cols["c.tail.n"].tolist() == [0.0, 1.0] and cols["c.tail.peaks"].tolist() == [0.0, 1.0]
    assert cols["c.h"][0] == 3.0 and cols["c.h"][1] != 3.0
