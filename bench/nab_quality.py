"""NAB (Numenta Anomaly Benchmark) through the daemon's defaults, scored by NAB's own scorer.

Per file of ../shared/nab/data/*/*.csv (read in place): `fit` with its defaults on the first 15 % of the
rows (NAB's probationary period, at most 750 rows), replay of the whole file as one stream through the
engine with the daemon's defaults, and three result directories in NAB's format
(`timestamp,anomaly_score`, one row per data row):

  likelihood  the published `likelihood` (0 while learning), scored with NAB's threshold optimiser;
  onsets      1 on the row where the stream's alarm is raised, scored with `--fixed 1.0`;
  flags       the published `anomaly` flag, scored with `--fixed 1.0`.

Fitted models are cached on disk (--cache), keyed by the file, the fit settings and a hash of export/'s
sources, so that scoring experiments replay without re-fitting. Each replay's per-reading internals are
also written there (`<file>.npz`) for offline experiments.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROBATION = 0.15  # NAB's probationary share of each file
MAX_FIT_ROWS = 750
PUBLISHED = [  # the same 44 files, the same scorer (../shared/nab/README.md)
    ("ARTime", 75.4),
    ("contextOSE", 72.8),
    ("Numenta HTM", 71.4),
    ("knncad", 62.3),
    ("earthgecko Skyline", 60.9),
    ("AWS Random Cut Forest", 55.1),
    ("windowed Gaussian", 41.5),
]
EPSILONS = (1e-2, 1e-3, 1e-4)
NORMAL = "artificialNoAnomaly/"  # NAB's files without an anomaly


def find_shared(name: str) -> Path:
    """../shared/<name> from the checkout (main) or from a worktree one level deeper."""
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / name).is_dir():
            return base / "shared" / name
    return ROOT.parent / "shared" / name


def nab_files(nab: Path) -> list[Path]:
    return sorted((nab / "data").glob("*/*.csv"))


def export_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "export").rglob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


@dataclass
class FileOut:
    name: str  # <category>/<file>.csv
    rows: int
    fit_error: str | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per data row


def fit_model(csv: Path, cache: Path, seed: int, key: str) -> tuple[Path | None, str | None]:
    from edge_lstm_export.fit import FitConfig, fit_csv

    model = cache / f"{csv.parent.name}-{csv.stem}-{key}.onnx"
    err_file = model.with_suffix(".error")
    if model.is_file():
        return model, None
    if err_file.is_file():
        return None, err_file.read_text()
    lines = csv.read_text(encoding="utf-8").splitlines()
    n = min(MAX_FIT_ROWS, int(PROBATION * (len(lines) - 1)))
    train = cache / f"{csv.parent.name}-{csv.stem}-train.csv"
    train.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    try:
        fit_csv(train, model, features=["value"], config=FitConfig(seed=seed), progress=None)
    except Exception as e:  # noqa: BLE001 - a fit failure is a result here (counted, null detector)
        err_file.write_text(f"{type(e).__name__}: {e}")
        return None, err_file.read_text()
    finally:
        train.unlink(missing_ok=True)
    return model, None


COLUMNS = (
    "ts",
    "value",
    "predicted",
    "score",
    "threshold",
    "deviation",
    "deviation_threshold",
    "bias",
    "bias_threshold",
    "likelihood",
    "surprise",
    "anomaly",
    "alarm",
    "raised",
    "cleared",
)


ENGINE_SETTINGS: dict[str, Any] = {}  # --flags likelihood: scoring=ScoringConfig(...), alarms=AlarmPolicy(...)


def replay_file(csv: Path, model_path: Path) -> dict[str, np.ndarray]:
    """Per data row (NaN where the engine rejected the row), the published fields and internals."""
    from edge_lstm.cli.replay import replay
    from edge_lstm.onnx_model import load_model
    from edge_lstm.reading import Reading
    from edge_lstm.result import Result

    model = load_model(model_path)
    n = sum(1 for _ in csv.open(encoding="utf-8")) - 1
    out = {c: np.full(n, np.nan) for c in COLUMNS}
    state: dict[str, Any] = {"row": 0, "pred": math.nan}

    def opt(v: float | None) -> float:
        return math.nan if v is None else v

    def on_result(r: Result, line: int) -> None:
        i = state["row"] = line - 2
        for name in ("score", "threshold", "deviation", "deviation_threshold", "bias", "bias_threshold", "likelihood"):
            out[name][i] = opt(getattr(r, name))
        out["surprise"][i] = opt(r.surprise)
        out["ts"][i] = r.ts
        out["anomaly"][i] = float(r.anomaly)
        out["alarm"][i] = float(r.alarm)
        ev = r.alarm_event
        out["raised"][i] = float(ev is not None and ev.state == "raised")
        out["cleared"][i] = float(ev is not None and ev.state == "cleared")
        out["predicted"][i] = state["pred"]
        state["pred"] = r.prediction[0] if r.prediction else math.nan

    def on_reading(r: Result, reading: Reading) -> None:
        out["value"][state["row"]] = reading.values[0]

    from edge_lstm.engine import Engine

    engine = Engine(model, max_streams=16, **ENGINE_SETTINGS)
    with csv.open(newline="", encoding="utf-8") as f:
        replay(f, model, on_result, on_reading=on_reading, engine=engine)
    return out


def run_nab(nab: Path, cache: Path, seed: int, limit: int = 0) -> list[FileOut]:
    from edge_lstm_export.fit import FitConfig

    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps([asdict(FitConfig(seed=seed)), export_hash(), PROBATION, MAX_FIT_ROWS]).encode())
    k = key.hexdigest()[:12]
    outs = []
    for csv in nab_files(nab)[: limit or None]:
        t0 = time.perf_counter()
        model, err = fit_model(csv, cache, seed, k)
        rows = sum(1 for _ in csv.open(encoding="utf-8")) - 1
        fo = FileOut(f"{csv.parent.name}/{csv.name}", rows, err)
        if model is not None:
            fo.columns = replay_file(csv, model)
            np.savez_compressed(cache / f"{csv.parent.name}-{csv.stem}-{k}-replay.npz", **fo.columns)
        outs.append(fo)
        print(f"nab: {fo.name} {time.perf_counter() - t0:.1f} s{' FIT FAILED: ' + err if err else ''}", file=sys.stderr)
    return outs


def write_results(nab: Path, outs: list[FileOut], dest: Path) -> dict[str, Path]:
    """The three outputs as NAB result directories."""
    dirs = {k: dest / k for k in ("likelihood", "onsets", "flags")}
    done = {fo.name for fo in outs}
    skipped = [  # files left out of a quick look (--nab-files) score as the null detector
        FileOut(f"{p.parent.name}/{p.name}", sum(1 for _ in p.open(encoding="utf-8")) - 1)
        for p in nab_files(nab)
        if f"{p.parent.name}/{p.name}" not in done
    ]
    for fo in [*outs, *skipped]:
        src = nab / "data" / fo.name
        stamps = [ln.split(",", 1)[0] for ln in src.read_text(encoding="utf-8").splitlines()[1:]]
        cols = fo.columns
        series = {
            "likelihood": np.nan_to_num(cols["likelihood"], nan=0.0) if cols else np.zeros(fo.rows),
            "onsets": np.nan_to_num(cols["raised"], nan=0.0) if cols else np.zeros(fo.rows),
            "flags": np.nan_to_num(cols["anomaly"], nan=0.0) if cols else np.zeros(fo.rows),
        }
        for k, d in dirs.items():
            path = d / fo.name
            path.parent.mkdir(parents=True, exist_ok=True)
            body = "".join(f"{t},{s:.9f}\n" for t, s in zip(stamps, series[k]))
            path.write_text("timestamp,anomaly_score\n" + body, encoding="utf-8")
    return dirs


def nab_score(nab: Path, results: Path, fixed: float | None) -> dict[str, float]:
    cmd = [sys.executable, str(nab / "score.py"), str(results)]
    if fixed is not None:
        cmd += ["--fixed", str(fixed)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"score.py failed: {done.stderr.strip()[-500:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def windows(nab: Path) -> dict[str, list[tuple[float, float]]]:
    """Labelled anomaly windows per file, as epoch seconds."""
    from datetime import datetime

    raw = json.loads((nab / "labels" / "combined_windows.json").read_text())

    def epoch(s: str) -> float:
        return datetime.fromisoformat(s.split(".")[0]).replace(tzinfo=UTC).timestamp()

    return {k: [(epoch(a), epoch(b)) for a, b in v] for k, v in raw.items()}


def outside_windows(nab: Path, fo: FileOut) -> np.ndarray:
    ts = fo.columns["ts"]
    mask = np.ones(len(ts), bool)
    for a, b in windows(nab).get(fo.name, []):
        mask &= ~((ts >= a) & (ts <= b))
    return mask


def calibration_shares(likelihood: np.ndarray) -> dict[str, Any]:
    """Share of readings (likelihood known) with likelihood >= 1 - eps."""
    like = likelihood[np.isfinite(likelihood)]
    return {
        "readings": int(like.size),
        **{f"{e:g}": float(np.mean(like >= 1 - e)) if like.size else None for e in EPSILONS},
    }


def calibration_row(name: str, c: dict[str, Any]) -> str:
    cells = []
    for e in EPSILONS:
        v = c[f"{e:g}"]
        ok = v is not None and e / 3 <= v <= 3 * e
        cells.append("–" if v is None else f"{v:.2e} {'ok' if ok else 'OUT'}")
    return f"| {name} | {c['readings']} | " + " | ".join(cells) + " |"


CALIBRATION_HEADER = (
    "| data (after warm-up) | readings | ≥ 1−1e-2 (band 3.3e-3–3e-2) | ≥ 1−1e-3 (3.3e-4–3e-3) "
    "| ≥ 1−1e-4 (3.3e-5–3e-4) |\n|---|---|---|---|---|"
)


def nab_report(nab: Path, outs: list[FileOut], dest: Path) -> dict[str, Any]:
    dirs = write_results(nab, outs, dest)
    scores = {
        "likelihood": nab_score(nab, dirs["likelihood"], None),
        "onsets": nab_score(nab, dirs["onsets"], 1.0),
        "flags": nab_score(nab, dirs["flags"], 1.0),
    }
    fitted = [fo for fo in outs if fo.columns]
    no_anomaly = np.concatenate(
        [fo.columns["likelihood"] for fo in fitted if fo.name.startswith(NORMAL)] or [np.zeros(0)]
    )
    outside = np.concatenate([fo.columns["likelihood"][outside_windows(nab, fo)] for fo in fitted] or [np.zeros(0)])
    return {
        "scores": scores,
        "fit_failures": [f"{fo.name}: {fo.fit_error}" for fo in outs if fo.fit_error],
        "calibration": {
            "NAB artificialNoAnomaly": calibration_shares(no_anomaly),
            "NAB outside the windows": calibration_shares(outside),
        },
        "onsets_outside_windows": int(sum(np.nansum(fo.columns["raised"][outside_windows(nab, fo)]) for fo in fitted)),
        "onsets_total": int(sum(np.nansum(fo.columns["raised"]) for fo in fitted)),
        # The bound: at most 1 false alarm onset per 10,000 normal readings on the anomaly-free files.
        "no_anomaly_onsets": int(sum(np.nansum(fo.columns["raised"]) for fo in fitted if fo.name.startswith(NORMAL))),
        "no_anomaly_readings": int(sum(len(fo.columns["raised"]) for fo in fitted if fo.name.startswith(NORMAL))),
        "flagged_outside_pct": 100
        * float(
            sum(np.nansum(fo.columns["anomaly"][outside_windows(nab, fo)]) for fo in fitted)
            / max(1, sum(int(outside_windows(nab, fo).sum()) for fo in fitted))
        ),
    }


def print_nab(r: dict[str, Any], files: int) -> None:
    s = r["scores"]
    print(f"\nNAB, {files} files (fit on the first 15 %, at most {MAX_FIT_ROWS} rows; daemon defaults)\n")
    print("| output, as a user consumes it | standard | low-FP | low-FN |\n|---|---|---|---|")
    for key, name in (
        ("likelihood", "`likelihood`, NAB's optimiser picks the threshold"),
        ("onsets", "alarm onsets as published (`--fixed 1.0`)"),
        ("flags", "`anomaly` flags as published (`--fixed 1.0`)"),
    ):
        v = s[key]
        print(f"| {name} | {v['standard']:.1f} | {v['low_fp']:.1f} | {v['low_fn']:.1f} |")
    print(f"\nfit failures: {len(r['fit_failures'])} {r['fit_failures']}")
    print(
        f"alarm onsets: {r['onsets_total']} ({r['onsets_outside_windows']} outside the windows); "
        f"readings flagged outside the windows: {r['flagged_outside_pct']:.1f} %; alarm onsets on NAB's "
        f"anomaly-free files: {r['no_anomaly_onsets']} in {r['no_anomaly_readings']} readings"
    )
    print("\npublished on the same 44 files: " + "; ".join(f"{n} {v:.1f}" for n, v in PUBLISHED))
