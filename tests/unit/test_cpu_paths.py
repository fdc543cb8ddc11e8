"""The CPU fast paths (issue 24) give exactly the numbers of the plain code they short-cut.

Each optimisation skips work when no stream of the round needs it (a where() whose mask is all true, a
side of a law no reading is on, an alarm round without a change). Compared here, bit for bit, with the
plain formulas, over rounds that mix streams in every state, so that a fast path that changes a number
fails here (bench/golden_scores.py checks the whole engine the same way).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.alarm import COLUMNS, AlarmPolicy, _popcount
from edge_lstm.scoring import ScoringConfig
from edge_lstm.scoring.channels.deviation import Deviation
from edge_lstm.scoring.stats import chi2k_cdf, tail_survival


def plain_alarm_update(
    policy: AlarmPolicy,
    cols: dict[str, np.ndarray],
    flags: np.ndarray,
    scores: np.ndarray,
    ts: np.ndarray,
    likelihood: np.ndarray | None,
    surprise: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """AlarmPolicy.update as it was before the fast paths: every column by a where()."""
    mask = np.int64((1 << policy.raise_window) - 1)
    flagged_before = cols["alarm.history"] != 0
    history = ((cols["alarm.history"] << 1) | flags.astype(np.int64)) & mask
    was = cols["alarm.raised"]
    calm = ~flags if likelihood is None else ~flags & (likelihood <= policy.clear_likelihood)
    quiet = np.where(calm, cols["alarm.quiet"] + 1, 0)
    cleared_now = was & (quiet >= policy.clear_after) if not policy.latch else np.zeros(len(was), bool)
    raised_now = ~was & (_popcount(history) >= policy.raise_n)
    if policy.raise_surprise > 0 and surprise is not None:
        raised_now |= ~was & flags & (surprise >= policy.raise_surprise)
    still = (was & ~cleared_now) | raised_now
    cols["alarm.history"] = np.where(cleared_now, 0, history)
    cols["alarm.quiet"] = np.where(still, quiet, 0)
    cols["alarm.readings"] = np.where(raised_now, 1, cols["alarm.readings"] + was)
    continuing = np.where(was | flagged_before, cols["alarm.peak"], 0.0)
    peak = np.maximum(continuing, scores)
    cols["alarm.peak"] = np.where(was | raised_now | (history != 0), peak, 0.0)
    cols["alarm.since"] = np.where(raised_now | cleared_now, ts, cols["alarm.since"])
    cols["alarm.raised"] = still
    return raised_now, cleared_now


@pytest.mark.parametrize("latch", [False, True])
def test_alarm_update_matches_the_plain_formulas_bit_for_bit(latch: bool) -> None:
    rng = np.random.default_rng(3)
    policy = AlarmPolicy(
        raise_n=3, raise_window=5, clear_after=4, clear_likelihood=0.9, raise_surprise=3.0, latch=latch
    )
    b = 4
    fast = {k: np.full(b, c.init, c.dtype) for k, c in COLUMNS.items()}
    plain = {k: v.copy() for k, v in fast.items()}
    kinds = {"quiet": 0, "raise": 0, "clear": 0, "all raised": 0}
    for t in range(3000):
        # Bursts of flags on some streams, quiet stretches on others, rounds with no flag at all.
        rate = [0.0, 0.05, 0.6, 1.0][(t // 40) % 4]
        flags = rng.random(b) < rate
        scores = rng.exponential(2.0, b)
        likelihood = rng.random(b) if t % 3 else None
        ts = np.full(b, 1_700_000_000.0 + t)
        surprise = rng.exponential(1.0, b) if t % 2 else None
        kinds["all raised"] += int(plain["alarm.raised"].all())
        got = policy.update(fast, flags, scores, ts, likelihood, surprise)
        want = plain_alarm_update(policy, plain, flags, scores, ts, likelihood, surprise)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)
        for k in COLUMNS:
            assert fast[k].dtype == plain[k].dtype and fast[k].tobytes() == plain[k].tobytes(), (t, k)
        kinds["raise"] += int(want[0].sum())
        kinds["clear"] += int(want[1].sum())
        kinds["quiet"] += int(not flags.any() and not plain["alarm.raised"].any())
    if latch:  # nothing clears: each stream raises once and stays raised
        assert kinds["raise"] == b and kinds["all raised"] > 10, kinds
    else:
        assert all(v > 10 for v in kinds.values()), kinds  # every path was taken


def test_deviation_likelihood_matches_the_plain_formula_on_either_side_of_u() -> None:
    config = ScoringConfig()
    channel = Deviation(3, config)
    p = channel.prior
    rng = np.random.default_rng(5)
    n = rng.integers(0, 200, 8).astype(np.float64)
    peaks = np.floor(n * rng.random(8))
    cols = {"deviation.tail.n": n, "deviation.tail.peaks": peaks, "deviation.tail.excess": peaks * rng.random(8)}
    below, above = p.u * rng.random(8), p.u * (1.0 + 3.0 * rng.random(8))
    for e in (below, above, np.where(rng.random(8) < 0.5, below, above), np.append(below[:7], np.nan)):
        zeta = (peaks + p.m0) / (n + p.m0 / p.p_u)
        plain = np.where(
            e >= p.u,
            1.0 - tail_survival(np.maximum(e, p.u), n, peaks, cols["deviation.tail.excess"], p),
            chi2k_cdf(e, channel._k) * (1.0 - zeta) / (1.0 - p.p_u),
        )
        assert channel.likelihood(e, cols).tobytes() == plain.tobytes()


def test_the_deferred_deviation_likelihood_is_the_one_computed_in_the_round() -> None:
    # Called after the round (the alarm asks for it last), it sees the tail fits as they stood before the
    # round's tail learning replaced them: the same bytes as computed in step() in every phase of a stream.
    from edge_lstm.onnx_model import load_model
    from edge_lstm.scoring import Scorer
    from edge_lstm.scoring.channels.deviation import columns

    config = ScoringConfig(baseline=20, tail_window=30)
    eager, deferred = Deviation(3, config), Deviation(3, config)
    rng = np.random.default_rng(7)
    init = {k: np.full((4, *c.shape), c.init, c.dtype) for k, c in columns(3, eager.h).items()}
    a, b = {k: v.copy() for k, v in init.items()}, {k: v.copy() for k, v in init.items()}
    for t in range(80):
        steps = np.array([t, t + 10, t + 25, t + 60])  # learning, tail window, frozen, in turn
        u = rng.normal(0, 1.0 if t % 17 else 6.0, (4, 3))
        restart = np.zeros(4, bool)
        e1, r1, want = eager.step(a, u, steps, restart)
        e2, r2, likelihood_of = deferred.step_deferred(b, u, steps, restart)
        assert likelihood_of().tobytes() == want.tobytes() and e1.tobytes() == e2.tobytes(), t
    # The engine's scorer defers it (the surprise channel publishes the field); alone, it is published.
    meta = load_model(None).meta
    dev = Scorer(meta).channel("deviation")
    assert isinstance(dev, Deviation) and not dev.publish_likelihood
    alone = Scorer(meta, channels=[Deviation]).channel("deviation")
    assert isinstance(alone, Deviation) and alone.publish_likelihood


def test_surprise_rate_matches_the_plain_clip_for_any_gap() -> None:
    from edge_lstm.onnx_model import load_model
    from edge_lstm.scoring.channels.surprise import MAX_RATE, Surprise

    channel = Surprise(load_model(None).meta, ScoringConfig())
    gap = np.array([0.0, 1.0, 3600.0, 1e9, np.inf, -np.inf, np.nan, -5.0])
    n = np.arange(len(gap), dtype=np.float64) * 100
    for learning in (n < 300, np.zeros(len(gap), bool)):
        steady = not learning.any()
        plain = np.minimum(np.maximum(0.0, gap / channel.config.horizon_s), MAX_RATE)
        if not steady:
            plain = np.where(learning, 1.0 / (n + 1.0), plain)
        plain = np.where(np.isfinite(plain), plain, 0.0)
        assert channel._rate(gap, n, learning, steady).tobytes() == plain.tobytes()


def test_a_round_in_any_arrival_order_gives_the_same_results_and_state() -> None:
    # The engine computes a round in slot order when that makes its rows one slice (engine._slot_order):
    # that is output-preserving only if a stream's numbers do not depend on its place in the batch.
    from edge_lstm import Engine, Reading
    from edge_lstm.onnx_model import load_model
    from edge_lstm.result import encode

    model = load_model(None)
    shuffled, ordered = Engine(model, max_streams=32), Engine(model, max_streams=32)
    rng, order = np.random.default_rng(0), np.random.default_rng(1)
    offset, scale = np.asarray(model.meta.scaling.offset), np.asarray(model.meta.scaling.scale)
    names = [f"s{i}" for i in range(12)]
    for t in range(360):
        v = offset + scale * rng.normal(0, 0.3 if t < 330 else 2.0, (len(names), len(offset)))
        readings = [Reading(s, 1_700_000_000.0 + t, tuple(row)) for s, row in zip(names, v.tolist())]
        some = [r for r in readings if order.random() < 0.9 or t < 2]  # mostly all, sometimes a subset
        mixed = list(some)
        order.shuffle(mixed)
        got = {r.stream: encode(r) for r in shuffled.process(mixed)}  # type: ignore[arg-type]
        want = {r.stream: encode(r) for r in ordered.process(some)}  # type: ignore[arg-type]
        assert got == want, t
    for name in names:
        a, b = shuffled.table.row(name), ordered.table.row(name)
        assert all(a.columns[k].tobytes() == b.columns[k].tobytes() for k in a.columns)
        assert all(x.tobytes() == y.tobytes() for x, y in zip(a.states, b.states))
