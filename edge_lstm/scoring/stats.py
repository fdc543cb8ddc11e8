"""The statistics every scoring channel shares (one place: no channel does its own).

- Normal law: `ndtr` (CDF, vectorised) and `ndtri` (its inverse).
- χ²(k)/k by Wilson–Hilferty ((χ²(k)/k)^(1/3) is nearly normal): `chi2k_quantile`, `chi2k_cdf`. The
  channels' statistics (mean squared z-scores, EWMAs of quadratic forms) are modelled by it.
- `shrunk`: covariance shrinkage towards the diagonal with a variance floor.
- Tail fits, peaks over threshold with a prior (docs/scoring.md, "Threshold"): `TailPrior`,
  `tail_columns`, `tail_learn`, `tail_learn_window`, `tail_threshold`, `tail_survival`, `tail_above`.

Tail fits. Extreme value theory (Pickands–Balkema–de Haan; SPOT, Siffer et al. KDD 2017): above a high
level u, the excesses y = x − u of almost any law follow a generalised Pareto law, so with ζ = P(x > u)

    P(x > z) ≈ ζ (1 + γ (z − u) / σ)^(−1/γ)   →   z_q = u + σ/γ ((ζ/q)^γ − 1)      (γ → 0: u + σ ln(ζ/q))

The statistic thresholded here is an EWMA of a quadratic form, i.e. a weighted sum of χ² terms: its law
is in the Gumbel domain (γ = 0, an exponential tail), so the shape is not estimated (it would only add
variance at these sample sizes: measured in docs/quality.md). What is estimated per stream is ζ and σ,
from the stream's own peaks, each with a conjugate prior worth `m0` pseudo-peaks taken from a prior law
(the χ² law of the channel): with n readings seen, N of them above u, S the sum of their excesses,

    ζ = (N + m0) / (n + m0 / p_u)          Beta prior: mean p_u = the prior's P(x > u)
    σ = (S + m0 σ₀) / (N + m0)              Gamma prior on the exponential rate: mean excess σ₀

and σ₀ is chosen so that the prior alone gives the prior's own q-quantile h₀: σ₀ = (h₀ − u) / ln(p_u / q).
With no peaks the threshold is the prior's; with many, the stream's own tail. Pure array functions,
vectorised over streams; a tail fit's state is three per-stream columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from statistics import NormalDist

import numpy as np

from ..npfast import count_nonzero, f64
from ..state import Column

# ndtr's constants as 0-d arrays (npfast.f64: a Python float costs each of its ~17 ufunc calls ~1,600
# instructions more; the same float64 values).
_ONE, _HALF, _SQRT2 = f64(1.0), f64(0.5), f64(math.sqrt(2.0))
_P, _A1, _A2, _A3, _A4, _A5 = (
    f64(c) for c in (0.3275911, 1.061405429, 1.453152027, 1.421413741, 0.284496736, 0.254829592)
)
_ZERO = f64(0.0)


def ndtr(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): no scipy on the daemon. `z`
    float64 (the constants are float64 arrays)."""
    x = np.abs(z) / _SQRT2
    t = _ONE / (_ONE + _P * x)
    poly = ((((_A1 * t - _A2) * t + _A3) * t - _A4) * t + _A5) * t
    out: np.ndarray = _HALF * (_ONE + np.sign(z) * (_ONE - poly * np.exp(-x * x)))
    return out


def ndtri(p: float) -> float:
    """Inverse standard normal CDF (the standard library's, Wichura's AS 241)."""
    return NormalDist().inv_cdf(p)


def chi2k_quantile(p: float, k: float, floor: float = 0.0) -> float:
    """The p-quantile of χ²(k)/k by Wilson–Hilferty; the cube's base is floored at `floor` (the
    approximation goes negative for small k and p)."""
    return float(max(1.0 - 2.0 / (9.0 * k) + ndtri(p) * math.sqrt(2.0 / (9.0 * k)), floor) ** 3)


@lru_cache(maxsize=64)
def _wilson_hilferty(k: float) -> tuple[np.ndarray, np.ndarray]:
    """chi2k_cdf's mean and scale of the cube root for k, as 0-d arrays (a model's few k: computed once)."""
    return f64(1.0 - 2.0 / (9.0 * k)), f64(math.sqrt(2.0 / (9.0 * k)))


def chi2k_cdf(x: np.ndarray, k: float) -> np.ndarray:
    """P(χ²(k)/k <= x) by Wilson–Hilferty (x < 0 counts as 0); `x` float64."""
    mean, scale = _wilson_hilferty(k)
    z = (np.cbrt(np.maximum(x, _ZERO)) - mean) / scale
    return ndtr(z)


def shrunk(cov: np.ndarray, shrink: float, var_floor: float) -> np.ndarray:
    """[..., F, F] covariances shrunk towards their diagonal by `shrink` and floored by `var_floor` (few
    readings, correlated sensors; a constant feature neither divides by zero nor alarms)."""
    eye = np.eye(cov.shape[-1])
    out: np.ndarray = (1.0 - shrink) * cov + shrink * cov * eye + var_floor * eye
    return out


@dataclass(frozen=True)
class TailPrior:
    """The prior tail above u: P(x > u) = p_u, exponential excesses with mean sigma0, worth m0 peaks."""

    u: float
    p_u: float
    sigma0: float
    m0: float

    @classmethod
    def through(cls, u: float, p_u: float, h0: float, q: float, m0: float) -> TailPrior:
        """The prior whose q-quantile is h0 (the prior law's own threshold) and whose P(x > u) is p_u."""
        if not (0 < q < p_u < 1 and h0 > u and m0 > 0):
            raise ValueError(f"tail prior needs 0 < q < p_u < 1, h0 > u, m0 > 0 (q={q}, p_u={p_u}, h0={h0}, u={u})")
        return cls(u, p_u, (h0 - u) / math.log(p_u / q), m0)

    @cached_property
    def arrays(self) -> TailConstants:
        """The constants the tail functions compute with, as 0-d arrays (npfast.f64), made once."""
        return TailConstants(f64(self.u), f64(self.m0), f64(self.m0 / self.p_u), f64(self.m0 * self.sigma0))


@dataclass(frozen=True)
class TailConstants:
    """A TailPrior's u, m0, m0 / p_u and m0 σ₀ as 0-d float64 arrays (the same values as the floats)."""

    u: np.ndarray
    m0: np.ndarray
    m0_p_u: np.ndarray
    m0_sigma0: np.ndarray


@lru_cache(maxsize=64)
def _f64(x: float) -> np.ndarray:
    """npfast.f64 of a setting passed in as a float (a risk), made once per value."""
    return f64(x)


def tail_columns(prefix: str) -> dict[str, Column]:
    return {
        f"{prefix}.n": Column((), np.float64, 0.0, exact=True),  # readings fitted
        f"{prefix}.peaks": Column((), np.float64, 0.0, exact=True),  # of them above u
        f"{prefix}.excess": Column((), np.float64, 0.0, exact=True),  # sum of their excesses over u
    }


def tail_add(cols: dict[str, np.ndarray], prefix: str, x: np.ndarray, take: np.ndarray, u: float | np.ndarray) -> None:
    """Count the readings `x[take]` into the fit (in place)."""
    over = take & (x > u)
    cols[f"{prefix}.n"] = cols[f"{prefix}.n"] + take
    cols[f"{prefix}.peaks"] = cols[f"{prefix}.peaks"] + over
    cols[f"{prefix}.excess"] = cols[f"{prefix}.excess"] + np.where(over, x - u, _ZERO)


def tail_learn(
    cols: dict[str, np.ndarray], prefix: str, h: str, x: np.ndarray, take: np.ndarray, prior: TailPrior, q: float
) -> None:
    """Count `x[take]` into the fit under `prefix` and set those streams' threshold column `h` to the
    updated z_q (in place); the other streams' thresholds are unchanged."""
    if not count_nonzero(take):  # count_nonzero: a third of ndarray.any()'s cost
        return
    tail_add(cols, prefix, x, take, prior.arrays.u)
    z = tail_threshold(cols[f"{prefix}.n"], cols[f"{prefix}.peaks"], cols[f"{prefix}.excess"], prior, q)
    cols[h] = np.where(take, z, cols[h])


def tail_fit(n: np.ndarray, peaks: np.ndarray, excess: np.ndarray, prior: TailPrior) -> tuple[np.ndarray, np.ndarray]:
    """The posterior-mean ζ and σ per stream from its counts (see the module docstring)."""
    c = prior.arrays
    peaks_m0 = peaks + c.m0  # once for both (the same values as computed twice)
    zeta = peaks_m0 / (n + c.m0_p_u)
    sigma = (excess + c.m0_sigma0) / peaks_m0
    return zeta, sigma


def tail_threshold(n: np.ndarray, peaks: np.ndarray, excess: np.ndarray, prior: TailPrior, q: float) -> np.ndarray:
    """z_q per stream from its counts: the posterior-mean ζ and σ, γ = 0."""
    zeta, sigma = tail_fit(n, peaks, excess, prior)
    # ζ < q would put the threshold below u: the stream exceeds u less often than the risk itself, and
    # then u is a safe, conservative threshold (no extrapolation downwards).
    out: np.ndarray = prior.arrays.u + sigma * np.log(np.maximum(zeta / _f64(q), _ONE))
    return out


def tail_survival(x: np.ndarray, n: np.ndarray, peaks: np.ndarray, excess: np.ndarray, prior: TailPrior) -> np.ndarray:
    """P(x' > x) above u under the fitted tail (1 − the likelihood); NaN below u (use the body's law)."""
    zeta, sigma = tail_fit(n, peaks, excess, prior)
    out: np.ndarray = np.where(x >= prior.u, tail_above(x, zeta, sigma, prior.u), np.nan)
    return out


def tail_above(x: np.ndarray, zeta: np.ndarray, sigma: np.ndarray, u: float | np.ndarray) -> np.ndarray:
    """P(x' > x) for x >= u under the tail (ζ, σ) that `tail_fit` gives: ζ · exp(−(x − u) / σ)."""
    out: np.ndarray = zeta * np.exp(-(x - u) / sigma)
    return out


def tail_learn_unflagged(
    cols: dict[str, np.ndarray], prefix: str, h: str, x: np.ndarray, take: np.ndarray, prior: TailPrior, q: float
) -> None:
    """The tail gating every channel uses: fit `x[take]` (a stream's first readings after its baseline)
    except where it exceeds the stream's threshold `cols[h]` (DSPOT: an anomaly is not normal operation)."""
    if not count_nonzero(take):  # past the window (the steady state): not even the comparison
        return
    tail_learn(cols, prefix, h, x, take & (x <= cols[h]), prior, q)
