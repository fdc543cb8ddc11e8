"""Peaks over threshold with a prior: a per-stream tail fit at a target risk q (docs/scoring.md,
"Threshold"). Pure array functions, vectorised over streams; the state is four numbers per stream.

Extreme value theory (Pickands–Balkema–de Haan; SPOT, Siffer et al. KDD 2017): above a high level u,
the excesses y = x − u of almost any law follow a generalised Pareto law, so with ζ = P(x > u)

    P(x > z) ≈ ζ (1 + γ (z − u) / σ)^(−1/γ)   →   z_q = u + σ/γ ((ζ/q)^γ − 1)      (γ → 0: u + σ ln(ζ/q))

The statistic thresholded here is an EWMA of a quadratic form, i.e. a weighted sum of χ² terms: its law
is in the Gumbel domain (γ = 0, an exponential tail), so the shape is not estimated (it would only add
variance at these sample sizes: measured in docs/quality.md). What is estimated per stream is ζ and σ,
from the stream's own peaks, each with a conjugate prior worth `m0` pseudo-peaks taken from a prior law
(the χ² law of baseline.py): with n readings seen, N of them above u, S the sum of their excesses,

    ζ = (N + m0) / (n + m0 / p_u)          Beta prior: mean p_u = the prior's P(x > u)
    σ = (S + m0 σ₀) / (N + m0)              Gamma prior on the exponential rate: mean excess σ₀

and σ₀ is chosen so that the prior alone gives the prior's own q-quantile h₀: σ₀ = (h₀ − u) / ln(p_u / q).
With no peaks the threshold is the prior's; with many, the stream's own tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .state import Column


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


def columns(prefix: str) -> dict[str, Column]:
    return {
        f"{prefix}.n": Column((), np.float64, 0.0),  # readings fitted
        f"{prefix}.peaks": Column((), np.float64, 0.0),  # of them above u
        f"{prefix}.excess": Column((), np.float64, 0.0),  # sum of their excesses over u
    }


def add(cols: dict[str, np.ndarray], prefix: str, x: np.ndarray, take: np.ndarray, u: float) -> None:
    """Count the readings `x[take]` into the fit (in place)."""
    over = take & (x > u)
    cols[f"{prefix}.n"] = cols[f"{prefix}.n"] + take
    cols[f"{prefix}.peaks"] = cols[f"{prefix}.peaks"] + over
    cols[f"{prefix}.excess"] = cols[f"{prefix}.excess"] + np.where(over, x - u, 0.0)


def learn(
    cols: dict[str, np.ndarray], prefix: str, h: str, x: np.ndarray, take: np.ndarray, prior: TailPrior, q: float
) -> None:
    """Count `x[take]` into the fit under `prefix` and set those streams' threshold column `h` to the
    updated z_q (in place); the other streams' thresholds are unchanged."""
    if not take.any():
        return
    add(cols, prefix, x, take, prior.u)
    z = threshold(cols[f"{prefix}.n"], cols[f"{prefix}.peaks"], cols[f"{prefix}.excess"], prior, q)
    cols[h] = np.where(take, z, cols[h])


def threshold(n: np.ndarray, peaks: np.ndarray, excess: np.ndarray, prior: TailPrior, q: float) -> np.ndarray:
    """z_q per stream from its counts: the posterior-mean ζ and σ, γ = 0."""
    zeta = (peaks + prior.m0) / (n + prior.m0 / prior.p_u)
    sigma = (excess + prior.m0 * prior.sigma0) / (peaks + prior.m0)
    # ζ < q would put the threshold below u: the stream exceeds u less often than the risk itself, and
    # then u is a safe, conservative threshold (no extrapolation downwards).
    out: np.ndarray = prior.u + sigma * np.log(np.maximum(zeta / q, 1.0))
    return out


def survival(x: np.ndarray, n: np.ndarray, peaks: np.ndarray, excess: np.ndarray, prior: TailPrior) -> np.ndarray:
    """P(x' > x) above u under the fitted tail (1 − the likelihood); NaN below u (use the body's law)."""
    zeta = (peaks + prior.m0) / (n + prior.m0 / prior.p_u)
    sigma = (excess + prior.m0 * prior.sigma0) / (peaks + prior.m0)
    out: np.ndarray = np.where(x >= prior.u, zeta * np.exp(-(x - prior.u) / sigma), np.nan)
    return out
