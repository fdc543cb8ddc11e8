"""`fit`: a first model for users without an ML team — a small next-step LSTM forecaster trained on a
CSV of normal operation, then exported, parity-checked and calibrated like any other model.

Choices, for 2 CPU cores and minutes not hours: one small LSTM predicting the *change* to the next
reading (x + head(h): slowly varying signals make "no change" a good prior), short overlapping
windows, Adam, a held-out split at the end of every stream (time order is preserved, so validation
never sees a window overlapping training), early stopping on it. Calibration uses the held-out part:
scores on data the model was fitted to would give a threshold that is too low.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import nn

from .api import ExportReport, export_torch
from .csvdata import read_csv
from .errors import DataError


class Forecaster(nn.Module):
    """Next-step forecaster in scaled units: every step's output predicts the following reading."""

    def __init__(self, n_features: int, hidden: int = 32, layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        y: torch.Tensor = x + self.head(out)
        return y


@dataclass(frozen=True)
class FitConfig:
    hidden: int = 32
    layers: int = 1
    epochs: int = 40
    seed: int = 0
    window: int = 64
    batch_size: int = 32
    lr: float = 5e-3
    patience: int = 5
    val_fraction: float = 0.2


@dataclass(frozen=True)
class FitResult:
    report: ExportReport
    epochs_run: int
    best_val_loss: float
    train_seconds: float


def fit_csv(
    csv_path: str | Path,
    out: str | Path,
    *,
    features: Sequence[str] | None = None,
    config: FitConfig = FitConfig(),
    progress: TextIO | None = sys.stderr,
    **export_kwargs: object,
) -> FitResult:
    data = read_csv(csv_path, features)
    return fit_arrays(data.arrays, out, features=data.features, config=config, progress=progress, **export_kwargs)


def fit_arrays(
    streams: Sequence[np.ndarray],
    out: str | Path,
    *,
    features: Sequence[str],
    config: FitConfig = FitConfig(),
    progress: TextIO | None = sys.stderr,
    **export_kwargs: object,
) -> FitResult:
    """Train on `streams` (feature units, one `[steps, F]` array per series), export to `out`."""
    c = config
    torch.manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    allv = np.concatenate(streams)
    offset, std = allv.mean(axis=0), allv.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    train, val = [], []
    for k, s in enumerate(streams):
        cut = int(len(s) * (1 - c.val_fraction))
        if cut < c.window + 1 or len(s) - cut < c.window + 1:
            raise DataError(
                f"stream {k} has {len(s)} rows; fit needs at least "
                f"{int((c.window + 1) / min(c.val_fraction, 1 - c.val_fraction)) + 1} "
                f"(windows of {c.window + 1} in both the training and held-out parts)"
            )
        scaled = ((s - offset) / scale).astype(np.float32)
        train.append(scaled[:cut])
        val.append(scaled[cut:])
    x_train = torch.from_numpy(_windows(train, c.window + 1, stride=c.window // 2))
    x_val = torch.from_numpy(_windows(val, c.window + 1, stride=c.window + 1))

    model = Forecaster(len(features), c.hidden, c.layers)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    best, best_state, bad, epoch = float("inf"), None, 0, 0
    start = time.perf_counter()
    for epoch in range(1, c.epochs + 1):
        model.train()
        order = rng.permutation(len(x_train))
        losses = []
        for b in range(0, len(order), c.batch_size):
            w = x_train[order[b : b + c.batch_size]]
            loss = nn.functional.mse_loss(model(w[:, :-1]), w[:, 1:])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            v = float(nn.functional.mse_loss(model(x_val[:, :-1]), x_val[:, 1:]))
        improved = v < best - 1e-6
        if improved:
            best, bad = v, 0
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            bad += 1
        _progress(progress, epoch, c.epochs, float(np.mean(losses)), v, improved)
        if bad >= c.patience:
            break
    seconds = time.perf_counter() - start
    if progress is not None:
        progress.write(
            ("\n" if progress.isatty() else "")
            + f"trained {epoch} epochs in {seconds:.1f} s, best held-out MSE {best:.5f} (scaled)\n"
        )
    assert best_state is not None
    model.load_state_dict(best_state)
    held_out = [v * scale + offset for v in val]  # back to feature units for calibration
    kwargs = {"name": "fitted-forecaster", "warmup_steps": 10, **export_kwargs}
    report = export_torch(
        model,
        out,
        features=list(features),
        output="forecast",
        scaling={"offset": offset.tolist(), "scale": scale.tolist()},
        calibrate=held_out,
        provenance={
            "fit": {
                "hidden": c.hidden,
                "layers": c.layers,
                "epochs": epoch,
                "seed": c.seed,
                "best_val_mse": best,
                "train_rows": int(sum(len(t) for t in train)),
                "held_out_rows": int(sum(len(v) for v in val)),
            }
        },
        **kwargs,  # type: ignore[arg-type]
    )
    return FitResult(report, epoch, best, seconds)


def _windows(series: list[np.ndarray], length: int, *, stride: int) -> np.ndarray:
    return np.stack([s[i : i + length] for s in series for i in range(0, len(s) - length + 1, stride)])


def _progress(out: TextIO | None, epoch: int, total: int, train: float, val: float, improved: bool) -> None:
    if out is None:
        return
    width = 24
    done = int(width * epoch / total)
    line = (
        f"epoch {epoch:3d}/{total} [{'#' * done}{'.' * (width - done)}] "
        f"train {train:.5f}  held-out {val:.5f}{'  *' if improved else ''}"
    )
    # Redraw in place on a terminal; one line per epoch in logs and pipes.
    out.write(("\r" + line) if out.isatty() else line + "\n")
    out.flush()
