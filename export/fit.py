"""`fit`: a first model for users without an ML team — a small next-step LSTM forecaster (or, with
`horizon` K > 1, a K-step encoder-decoder one) trained on a CSV of normal operation, then exported,
parity-checked and calibrated like any other model.

Choices, for 2 CPU cores and minutes not hours: one small LSTM predicting the *change* to the next
reading (x + head(h): slowly varying signals make "no change" a good prior), short overlapping
windows, Adam, a held-out split at the end of every stream (time order is preserved, so validation
never sees a window overlapping training), early stopping on it. Calibration uses the held-out part:
scores on data the model was fitted to would give a threshold that is too low. Short data (down to a
few dozen rows per series) fits too: the window and the hold-out adapt to it (`plan_split`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


class Seq2SeqForecaster(nn.Module):
    """K-step forecaster (`fit --horizon K`), the encoder-decoder protocol of export/seq2seq.py: an LSTM
    encoder over the history, an LSTM decoder started from its state that rolls out autoregressively,
    each step predicting the change to the next reading like `Forecaster`."""

    def __init__(self, n_features: int, hidden: int = 32, layers: int = 1) -> None:
        super().__init__()
        self.encoder = nn.LSTM(n_features, hidden, layers, batch_first=True)
        self.decoder = nn.LSTM(n_features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, n_features)

    def decode(self, last: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], horizon: int) -> torch.Tensor:
        x, out = last, []
        for _ in range(horizon):
            y, state = self.decoder(x.unsqueeze(1), state)
            x = x + self.head(y[:, 0])
            out.append(x)
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor, horizon: int = 1) -> torch.Tensor:
        _, state = self.encoder(x)
        return self.decode(x[:, -1], state, horizon)


@dataclass(frozen=True)
class FitConfig:
    hidden: int = 32
    layers: int = 1
    # Trained to convergence: with 40 epochs and patience 5 the cap stopped half of SKAB's 400-row fits
    # while their held-out error was still falling (docs/quality.md, "Training").
    epochs: int = 120
    seed: int = 0
    window: int = 64
    batch_size: int = 32
    lr: float = 5e-3
    patience: int = 20
    val_fraction: float = 0.2
    horizon: int = 1  # > 1: train a K-step encoder-decoder forecaster (Seq2SeqForecaster)
    # Torch threads while fitting. These models are small: with torch's default (one per core) a
    # 400-row fit took 10x longer on a 2-core machine (7 s vs 0.7 s), and far longer still when another
    # process loads the cores (threads spinning at each op's barrier; docs/export.md).
    threads: int = 1


@dataclass(frozen=True)
class FitResult:
    report: ExportReport
    epochs_run: int
    best_val_loss: float
    train_seconds: float
    # One line when the LSTM learned nothing useful (`skill`), else None.
    verdict: str | None = None
    # What the CSV reader left out or skipped, and the interval it found (`fit_csv`).
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """What `fit` prints after the export report: the data notes, then the verdict."""
        return [f"data: {n}" for n in self.notes] + ([self.verdict] if self.verdict else [])


def fit_csv(
    csv_path: str | Path,
    out: str | Path,
    *,
    features: Sequence[str] | None = None,
    config: FitConfig = FitConfig(),
    progress: TextIO | None = sys.stderr,
    **export_kwargs: object,
) -> FitResult:
    """Fit on a CSV as a user has it: rows the daemon would reject (a missing or non-numeric value, an
    unreadable or repeated timestamp) are left out, as in service; the sample interval, unless given, is
    the median step of the timestamp column (csvdata.py)."""
    data = read_csv(csv_path, features, missing="drop")
    notes = list(data.notes)
    if export_kwargs.get("sample_interval_s") is None and data.sample_interval_s is not None:
        export_kwargs["sample_interval_s"] = data.sample_interval_s
        notes.append(f"sample interval {data.sample_interval_s:g} s (median step of the timestamps)")
    streams = data.streams
    short = {k: len(v) for k, v in streams.items() if not long_enough(len(v), config)}
    if short and len(short) < len(streams):  # fit on the others; none long enough: plan_split says why
        notes.append(f"{len(short)} stream(s) left out, too short to train on: {short} rows")
        streams = {k: v for k, v in streams.items() if k not in short}
    arrays = list(streams.values())
    result = fit_arrays(arrays, out, features=data.features, config=config, progress=progress, **export_kwargs)
    return replace(result, notes=tuple(notes))


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
    if config.threads < 1:
        raise ValueError(f"threads must be >= 1, got {config.threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _fit(streams, out, features, config, progress, **export_kwargs)
    finally:
        torch.set_num_threads(previous)


def _fit(
    streams: Sequence[np.ndarray],
    out: str | Path,
    features: Sequence[str],
    config: FitConfig,
    progress: TextIO | None,
    **export_kwargs: object,
) -> FitResult:
    c = config
    torch.manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    allv = np.concatenate(streams)
    offset, std = allv.mean(axis=0), allv.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    plan = plan_split([len(s) for s in streams], c)
    train, val = [], []
    for s, cut in zip(streams, plan.cuts):
        scaled = ((s - offset) / scale).astype(np.float32)
        train.append(scaled[:cut])
        val.append(scaled[cut:])
    w, k = plan.window, c.horizon
    x_train = torch.from_numpy(_windows(train, w + k, stride=max(1, w // 2)))
    # Held-out windows as long as the shortest held-out part allows (at most the training window).
    vw = min(w + k, min(len(v) for v in val))
    x_val = torch.from_numpy(_windows(val, vw, stride=vw))

    model: Forecaster | Seq2SeqForecaster = (
        Forecaster(len(features), c.hidden, c.layers)
        if k == 1
        else Seq2SeqForecaster(len(features), c.hidden, c.layers)
    )

    def loss_of(win: torch.Tensor) -> torch.Tensor:
        if k == 1:  # every step predicts the next reading
            return nn.functional.mse_loss(model(win[:, :-1]), win[:, 1:])
        return nn.functional.mse_loss(model(win[:, :-k], k), win[:, -k:])  # the history, then K steps

    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    best, best_state, bad, epoch = float("inf"), None, 0, 0
    start = time.perf_counter()
    for epoch in range(1, c.epochs + 1):
        model.train()
        order = rng.permutation(len(x_train))
        losses = []
        for b in range(0, len(order), c.batch_size):
            win = x_train[order[b : b + c.batch_size]]
            loss = loss_of(win)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            v = float(loss_of(x_val))
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
    naive, naive_mse = _naive_forecast(x_val, k)
    constant = bool((std == 0).all())
    verdict = _verdict(features, allv, best, naive, naive_mse)
    kwargs = {"name": "fitted-forecaster", "warmup_steps": 10, **export_kwargs}
    report = export_torch(
        model,
        out,
        features=list(features),
        output="forecast",
        progress=progress,
        scaling={"offset": offset.tolist(), "scale": scale.tolist()},
        # Whole series, counted from the cut: calibration sees only held-out rows, with a warm state.
        # Constant data has no forecast error but the model's own settling from the zero state at a
        # stream's start: counted from the first reading, so that settling is normal, not a change.
        calibrate=[np.asarray(x, np.float64) for x in streams],
        calibrate_from=[0] * len(streams) if constant else plan.cuts,
        provenance={
            "fit": {
                "hidden": c.hidden,
                "layers": c.layers,
                "epochs": epoch,
                "seed": c.seed,
                "best_val_mse": best,
                "train_rows": int(sum(len(t) for t in train)),
                "held_out_rows": int(sum(len(v) for v in val)),
                "window": plan.window,
                "naive_forecast": naive,
                "naive_val_mse": naive_mse,
                "learned": verdict is None,
                **({"horizon": k} if k > 1 else {}),
            }
        },
        horizon=k if k > 1 else None,
        **kwargs,  # type: ignore[arg-type]
    )
    return FitResult(report, epoch, best, seconds, verdict)


# The LSTM has learned something when its held-out error is this much below the better naive forecast's.
MIN_SKILL = 0.05
NOTHING_LEARNED = (
    "the model still carries the statistical channels the daemon computes for every stream "
    "(deviation, bias, stuck sensor)"
)


def _naive_forecast(x_val: torch.Tensor, k: int) -> tuple[str, float]:
    """The better of two forecasts that need no model, and its held-out MSE (scaled units): the last
    value (right for a random walk), the training mean (0 when scaled; right for white noise)."""
    target = x_val[:, 1:] if k == 1 else x_val[:, -k:]
    last = x_val[:, :-1] if k == 1 else x_val[:, -k - 1 : -k].expand_as(target)
    errors = {
        "last-value": float(nn.functional.mse_loss(last, target)),
        "mean": float(target.pow(2).mean()),
    }
    name = min(errors, key=lambda n: errors[n])
    return name, errors[name]


def _verdict(features: Sequence[str], data: np.ndarray, best: float, naive: str, naive_mse: float) -> str | None:
    """One line when the LSTM learned nothing useful, else None."""
    if (data.std(axis=0) == 0).all():
        values = ", ".join(f"{f} = {v:g}" for f, v in zip(features, data[0]))
        return (
            f"fit: the LSTM learned nothing useful: every feature is constant ({values}); "
            f"{NOTHING_LEARNED}, and any change of value is flagged"
        )
    if best < (1 - MIN_SKILL) * naive_mse:
        return None
    return (
        f"fit: the LSTM learned nothing useful: its held-out forecast error (MSE {best:.3g}, scaled) is no "
        f"better than the {naive} forecast's ({naive_mse:.3g}); {NOTHING_LEARNED}, and its score flags "
        "sudden changes"
    )


MIN_WINDOW = 8  # shorter training windows teach the LSTM too little about its own state
MIN_TRAIN_WINDOWS = 4  # per stream, with the half-window stride
MIN_HELD_OUT = 30  # held-out rows per stream: early stopping and calibration need some


@dataclass(frozen=True)
class SplitPlan:
    window: int  # training window length (steps predicted per window)
    cuts: list[int]  # per stream: rows before the cut train, rows from it are held out


def long_enough(rows: int, c: FitConfig) -> bool:
    """A stream of `rows` rows leaves enough to train on after its held-out part (`plan_split`)."""
    return rows - max(MIN_HELD_OUT, round(rows * c.val_fraction)) >= (MIN_TRAIN_WINDOWS + 1) * MIN_WINDOW // 2 + 1


def plan_split(lengths: Sequence[int], c: FitConfig) -> SplitPlan:
    """Fit the window and the hold-out to the data, or say exactly how much data is missing.

    Every stream holds out its last `val_fraction` of rows, at least MIN_HELD_OUT. The window is
    `config.window`, shrunk (down to MIN_WINDOW) so that the shortest training part still gives
    MIN_TRAIN_WINDOWS windows. Checked before any training starts.
    """
    if not 0 < c.val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {c.val_fraction}")
    if c.window < MIN_WINDOW:
        raise DataError(f"window must be at least {MIN_WINDOW}, got {c.window}")
    if c.horizon < 1:
        raise DataError(f"horizon must be at least 1, got {c.horizon}")
    cuts = [n - max(MIN_HELD_OUT, round(n * c.val_fraction)) for n in lengths]
    # MIN_TRAIN_WINDOWS windows of w + 1 rows at stride w // 2 need (k + 1) * w / 2 + 1 rows.
    min_train = (MIN_TRAIN_WINDOWS + 1) * MIN_WINDOW // 2 + 1
    need = max(min_train + MIN_HELD_OUT, int(np.ceil(min_train / (1 - c.val_fraction))))
    for k, (n, cut) in enumerate(zip(lengths, cuts)):
        if cut < min_train:
            raise DataError(
                f"stream {k} has {n} rows; fit needs at least {need} per stream "
                f"({min_train} to train on with windows of {MIN_WINDOW + 1}, and "
                f"max({MIN_HELD_OUT}, {c.val_fraction:g} of the rows) held out for early stopping and calibration)"
            )
    shortest = min(cuts)
    window = min(c.window, max(MIN_WINDOW, 2 * (shortest - 1) // (MIN_TRAIN_WINDOWS + 1)))
    # A K-step window is the history plus K targets: the training parts need a window plus K rows, and
    # the held-out parts at least MIN_WINDOW rows of history before their K targets.
    held_out = min(n - cut for n, cut in zip(lengths, cuts))
    if c.horizon > 1 and (shortest < window + c.horizon or held_out < MIN_WINDOW + c.horizon):
        raise DataError(
            f"--horizon {c.horizon} needs at least {window + c.horizon} training rows and "
            f"{MIN_WINDOW + c.horizon} held-out rows per stream; the shortest stream has {shortest} and "
            f"{held_out}: use a shorter horizon or more data"
        )
    return SplitPlan(window, cuts)


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
