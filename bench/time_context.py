#!/usr/bin/env python3
"""Does time context help `fit`'s LSTM on NAB? (issue 24: "measure whether time-of-day and day-of-week
inputs help; keep them if they do".)

    .venv/bin/python bench/time_context.py            # 44 files x 3 input sets, ~2 min on 2 cores
    .venv/bin/python bench/time_context.py --seed 1

For every NAB file (../shared/nab, read in place), three LSTM forecasters are trained exactly as `fit`
trains its model (export/fit.py: its FitConfig, split, windows, early stopping; on the first 15 % of
the rows, at most 750, NAB's probationary period) and differ only in their inputs:

  none      the reading (what `fit` does)
  tod       the reading, sin and cos of the time of day of its timestamp
  tod+dow   the reading, the time of day and the day of the week (sin, cos each)

each predicting the next reading. Then, causally over the whole file, the one-step forecast residual r
and two comparisons between the input sets:

- forecast error on normal data: mean r² over the rows after the training part that lie outside NAB's
  labelled windows, per file, as a ratio to `none` (geometric mean, median, files better by 5 %);
- detection: NAB's standard score (NAB's optimiser over one threshold, a numpy copy of NAB's sweeper that
  reproduces score.py's figures) of |r| / its running RMS, the forecast channel reduced to its essence.

Both are printed; nothing here is tuned (the settings are fit's defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.fit import FitConfig, _windows, plan_split  # noqa: E402

MODES = ("none", "tod", "tod+dow")
DAY = 86_400.0


class Forecaster(nn.Module):
    """fit's forecaster (x + head(h)) with extra inputs: only the reading is predicted."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_in, hidden, 1, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        y: torch.Tensor = x[..., :1] + self.head(out)
        return y


def time_inputs(ts: np.ndarray, mode: str) -> np.ndarray:
    tod = (ts % DAY) / DAY
    dow = ((ts // DAY + 3) % 7) / 7.0  # 1970-01-01 was a Thursday: 0 = Monday
    cols: list[np.ndarray] = []
    if mode in ("tod", "tod+dow"):
        cols += [np.sin(2 * np.pi * tod), np.cos(2 * np.pi * tod)]
    if mode == "tod+dow":
        cols += [np.sin(2 * np.pi * dow), np.cos(2 * np.pi * dow)]
    return np.stack(cols, 1) if cols else np.zeros((len(ts), 0))


def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [ln.split(",") for ln in path.read_text(encoding="utf-8").splitlines()[1:]]
    ts = np.array([datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() for r in rows])
    return ts, np.array([float(r[1]) for r in rows])


def residuals(ts: np.ndarray, x: np.ndarray, mode: str, c: FitConfig) -> tuple[np.ndarray, int]:
    """Trained as fit trains (seed, split, windows, Adam, clipping, early stopping); the one-step
    residuals (scaled units) over the whole file, and the number of training rows."""
    n = len(x)
    n_train = min(int(0.15 * n), 750)
    offset, std = x[:n_train].mean(), x[:n_train].std()
    scaled = ((x - offset) / (std if std > 0 else 1.0))[:, None]
    full = np.concatenate([scaled, time_inputs(ts, mode)], 1).astype(np.float32)
    torch.manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    plan = plan_split([n_train], c)
    cut, w = plan.cuts[0], plan.window
    x_train = torch.from_numpy(_windows([full[:cut]], w + 1, stride=max(1, w // 2)))
    held = full[cut:n_train]
    vw = min(w + 1, len(held))
    x_val = torch.from_numpy(_windows([held], vw, stride=vw))
    model = Forecaster(full.shape[1], c.hidden)

    def loss_of(win: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(model(win[:, :-1]), win[:, 1:, :1])

    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    best, bad, best_state = math.inf, 0, None
    for _ in range(c.epochs):
        model.train()
        order = rng.permutation(len(x_train))
        for b in range(0, len(order), c.batch_size):
            loss = loss_of(x_train[order[b : b + c.batch_size]])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        model.eval()
        with torch.no_grad():
            v = float(loss_of(x_val))
        if v < best - 1e-6:
            best, bad, best_state = v, 0, {k: t.clone() for k, t in model.state_dict().items()}
        elif (bad := bad + 1) >= c.patience:
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    with torch.no_grad():
        y = model(torch.from_numpy(full)[None])[0, :, 0].numpy()
    r = np.full(n, np.nan)
    r[1:] = scaled[1:, 0] - y[:-1]
    return r, n_train


def standardised(r: np.ndarray, n_train: int, span: float = 2000.0) -> np.ndarray:
    """|r| / √v, v the running mean square of r (from the training rows; one reading moves it by at
    most 16 v, as the surprise channel bounds a reading's influence)."""
    v = float(np.nanmean(r[1:n_train] ** 2))
    out = np.zeros(len(r))
    for i in range(n_train, len(r)):
        ri = 0.0 if np.isnan(r[i]) else float(r[i])
        out[i] = abs(ri) / math.sqrt(v)
        v += (min(ri * ri, 16.0 * v) - v) / span
    return out


class NabScorer:
    """NAB's sweeper (standard profile: TP 1, FP 0.11, FN 1) in numpy, over one global threshold."""

    def __init__(self, nab: Path) -> None:
        self.windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
        self.files: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}

    def add(self, name: str, ts: np.ndarray) -> None:
        n = len(ts)
        index = {t: i for i, t in enumerate(ts)}

        def at(s: str) -> int:
            return index[datetime.fromisoformat(s.split(".")[0]).replace(tzinfo=UTC).timestamp()]

        wins = [(at(a), at(b)) for a, b in self.windows[name]]
        wid, unweighted, i = np.full(n, -1), np.full(n, -1.0), np.arange(n)
        for k, (a, b) in enumerate(wins):
            wid[a : b + 1] = k
            width = b - a + 1.0
            unweighted[a : b + 1] = _sigmoid(-(b - i[a : b + 1] + 1) / width) / _sigmoid(-1.0)
            end = wins[k + 1][0] if k + 1 < len(wins) else n
            unweighted[b + 1 : end] = _sigmoid(np.abs(b - i[b + 1 : end]) / (width - 1.0))
        scorable = i >= min(math.floor(0.15 * n), 0.15 * 5000)
        self.files[name] = (wid, unweighted, scorable, len(wins))

    def normalised(self, scores: dict[str, np.ndarray], threshold: float) -> float:
        raw, windows = 0.0, 0
        for name, (wid, unweighted, scorable, nw) in self.files.items():
            hit = (scores[name] >= threshold) & scorable
            raw += 0.11 * unweighted[hit & (wid < 0)].sum()
            for k in range(nw):
                m = hit & (wid == k)
                raw += unweighted[m].max() if m.any() else -1.0
            windows += nw
        return 100.0 * (raw + windows) / (2.0 * windows)

    def optimised(self, scores: dict[str, np.ndarray]) -> float:
        top = np.unique(np.sort(np.concatenate([scores[n][f[2]] for n, f in self.files.items()]))[-20_000:])
        return max(self.normalised(scores, t) for t in top[:: max(1, len(top) // 1500)])


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    x = np.asarray(x, float)
    return np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nab", type=Path, default=ROOT.parent / "shared" / "nab")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = FitConfig(seed=args.seed)
    scorer = NabScorer(args.nab)
    errors: dict[str, list[float]] = {m: [] for m in MODES}
    detect: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODES}
    for path in sorted((args.nab / "data").glob("*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        ts, x = read(path)
        scorer.add(name, ts)
        wid = scorer.files[name][0]
        for mode in MODES:
            r, n_train = residuals(ts, x, mode, config)
            normal = wid < 0
            normal[:n_train] = False
            errors[mode].append(float(np.nanmean(r[normal] ** 2)))
            detect[mode][name] = standardised(r, n_train)
        print(f"{name}: " + ", ".join(f"{m} {errors[m][-1]:.4g}" for m in MODES), file=sys.stderr)
    base = np.asarray(errors["none"])
    print(f"time context as LSTM inputs, NAB 44 files, fit's training (seed {args.seed})\n")
    print(
        "| inputs | forecast MSE on normal rows / none: geometric mean | median | files ≥ 5 % better | worse "
        "| NAB standard, |r| / RMS |"
    )
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        q = np.asarray(errors[mode]) / base
        print(
            f"| {mode} | {math.exp(float(np.mean(np.log(q)))):.3f} | {float(np.median(q)):.3f} | "
            f"{int((q < 0.95).sum())} | {int((q > 1.05).sum())} | {scorer.optimised(detect[mode]):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
