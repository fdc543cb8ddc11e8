"""Detection quality on labelled data, as a user gets it: `fit`'s defaults, the daemon's default scoring
and alarm settings, the published `anomaly` flag. One command reproduces docs/quality.md:

    .venv/bin/python bench/quality.py                      # SKAB (both protocols) + synthetic suite
    .venv/bin/python bench/quality.py --only skab-b --files 5   # a quick look
    .venv/bin/python bench/quality.py --only skab-a --seed 3    # another `fit` seed (docs/quality.md, "Seeds")

SKAB is read from ../shared/skab (or --skab DIR), never copied. Models and temporary CSVs go to a
temporary directory. Needs the export extra (torch) for `fit`.

Protocols:
  skab-a  per file: fit on the file's first 400 rows, replay the whole file, score rows 400+ (SKAB's own).
  skab-b  one model fitted on anomaly-free.csv; every experiment replayed as a fresh stream; rows 400+.
  af      anomaly-free.csv replayed through skab-b's model (its own training data): alarms per 10k readings.
  synth   synthetic machines with realistic faults (drift, level shift, variance change, stuck sensor,
          spike, lost seasonality); one model fitted on normal data, every fault kind replayed.
  series  the issue's own streams (sine, random walk, counts; 1 s and 300 s apart), each through a model
          fitted on it: a 10σ shift, a 20σ spike, normal streams (bench/series_quality.py).
  nab     NAB's 44 files with NAB's scorer (bench/nab_quality.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import nab_quality  # noqa: E402
import series_quality  # noqa: E402

SKAB_FEATURES = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
]
TRAIN_ROWS = 400  # SKAB's per-file protocol
FIT_SEED = 0  # `fit`'s seed for every model trained here (--seed; 0 is fit's default)
LEADERBOARD = [  # SKAB upstream README (offline, whole windows): F1, FAR %, MAR %
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared + Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T-squared", 0.66, 19.21, 42.60),
    ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla LSTM", 0.54, 12.54, 59.53),
    ("Isolation forest", 0.29, 2.56, 82.89),
]


def skab_files(skab: Path) -> list[Path]:
    return sorted(p for d in ("valve1", "valve2", "other") for p in (skab / d).glob("*.csv"))


FIT_CACHE: Path | None = None  # --cache: fitted models reused across runs (keyed by data, settings, export/)


def fit(csv: Path, out: Path, features: list[str]) -> Path:
    import hashlib

    from edge_lstm_export.fit import FitConfig, fit_csv

    config = FitConfig(seed=FIT_SEED)
    if FIT_CACHE is not None:
        key = hashlib.sha256(
            csv.read_bytes() + repr((features, config, nab_quality.export_hash())).encode()
        ).hexdigest()[:16]
        cached = FIT_CACHE / f"{out.stem}-{key}.onnx"
        if not cached.is_file():
            FIT_CACHE.mkdir(parents=True, exist_ok=True)
            fit_csv(csv, cached, features=features, config=config, progress=None)
        return cached
    fit_csv(csv, out, features=features, config=config, progress=None)
    return out


def evaluate(model_path: Path, files: list[Path], score_from: int) -> tuple[dict[str, Any], list[Any]]:
    from edge_lstm.cli.evaluate import Quality, run_file
    from edge_lstm.engine import Engine
    from edge_lstm.onnx_model import load_model

    model = load_model(model_path)
    total, runs = Quality(), []
    for f in files:
        engine = Engine(model, max_streams=16, **nab_quality.ENGINE_SETTINGS)
        run = run_file(f, model, score_from=score_from, engine=engine)
        total.add(run)
        runs.append(run)
    return total.metrics(), runs


def protocol_a(files: list[Path], tmp: Path) -> dict[str, Any]:
    from edge_lstm.cli.evaluate import Quality

    total = Quality()
    for f in files:
        lines = f.read_text(encoding="utf-8").splitlines()
        train = tmp / f"{f.parent.name}-{f.stem}-train.csv"
        train.write_text("\n".join(lines[: TRAIN_ROWS + 1]) + "\n", encoding="utf-8")
        model = fit(train, tmp / f"{f.parent.name}-{f.stem}.onnx", SKAB_FEATURES)
        _, runs = evaluate(model, [f], TRAIN_ROWS)
        total.add(runs[0])
    return total.metrics()


def protocol_b(skab: Path, files: list[Path], tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    model = fit(skab / "anomaly-free" / "anomaly-free.csv", tmp / "anomaly-free.onnx", SKAB_FEATURES)
    b, _ = evaluate(model, files, TRAIN_ROWS)
    af = anomaly_free(model, skab / "anomaly-free" / "anomaly-free.csv", tmp)
    af["split"] = anomaly_free_split(skab / "anomaly-free" / "anomaly-free.csv", tmp)
    like = nab_quality.replay_file(skab / "anomaly-free" / "anomaly-free.csv", model)["likelihood"]
    af["calibration"] = {"SKAB anomaly-free.csv": nab_quality.calibration_shares(like)}
    return b, af


def anomaly_free(model: Path, csv: Path, tmp: Path) -> dict[str, Any]:
    """The training file through its own model: every row is normal."""
    lines = csv.read_text(encoding="utf-8").splitlines()
    labelled = tmp / "anomaly-free-labelled.csv"
    labelled.write_text("\n".join([lines[0] + ";anomaly"] + [ln + ";0" for ln in lines[1:]]) + "\n", encoding="utf-8")
    m, runs = evaluate(model, [labelled], 0)
    rows = m["rows"]
    return {
        "rows": rows,
        "alarms": m["alarms"],
        "alarms_per_10k": 1e4 * m["alarms"] / rows if rows else None,
        "flagged_pct": 100 * m["fp"] / rows if rows else None,
        "alarm_readings_pct": 100 * sum(runs[0].alarm) / rows if rows else None,
        "false_alarms_per_day": m["false_alarms_per_day"],
    }


def anomaly_free_split(csv: Path, tmp: Path) -> dict[str, Any]:
    """New normal data of the same machine: fit on the first half of anomaly-free.csv, replay the whole
    file as one stream and count the second half (the pump goes on warming up beyond what it was fitted
    on)."""
    lines = csv.read_text(encoding="utf-8").splitlines()
    half = (len(lines) - 1) // 2
    train = tmp / "anomaly-free-first-half.csv"
    train.write_text("\n".join(lines[: half + 1]) + "\n", encoding="utf-8")
    model = fit(train, tmp / "anomaly-free-first-half.onnx", SKAB_FEATURES)
    labelled = tmp / "anomaly-free-labelled.csv"
    labelled.write_text("\n".join([lines[0] + ";anomaly"] + [ln + ";0" for ln in lines[1:]]) + "\n", encoding="utf-8")
    m, _ = evaluate(model, [labelled], half)
    rows = m["rows"]
    return {"rows": rows, "alarms": m["alarms"], "flagged_pct": 100 * m["fp"] / rows if rows else None}


# ---- synthetic suite ------------------------------------------------------------------------------

FAULTS = ("drift", "level_shift", "variance", "stuck", "spike", "lost_seasonality")
PERIOD = 120  # readings per cycle of the simulated machine (e.g. a duty cycle at 1 Hz)


def machine(n: int, rng: np.random.Generator) -> np.ndarray:
    """A 3-sensor machine: a cyclic load, a temperature following it with a lag, a noisy vibration."""
    t = np.arange(n)
    load = 10 + 3 * np.sin(2 * np.pi * t / PERIOD) + rng.normal(0, 0.3, n)
    temp = np.zeros(n)
    temp[0] = 40
    for i in range(1, n):
        temp[i] = temp[i - 1] + 0.05 * (40 + 0.8 * (load[i] - 10) - temp[i - 1]) + rng.normal(0, 0.05)
    vib = 0.5 + 0.02 * (load - 10) + rng.normal(0, 0.03, n)
    return np.stack([load, temp, vib], axis=1)


def inject(x: np.ndarray, kind: str, start: int, length: int, rng: np.random.Generator) -> np.ndarray:
    y = x.copy()
    sl = slice(start, start + length)
    std = x[:start].std(axis=0)
    if kind == "drift":  # vibration creeps up (wear): 6 std over the fault
        y[sl, 2] += np.linspace(0, 6 * std[2], length)
    elif kind == "level_shift":  # temperature offset (a fouled cooler)
        y[sl, 1] += 3 * std[1]
    elif kind == "variance":  # vibration gets noisy (loose mounting)
        y[sl, 2] += rng.normal(0, 4 * std[2], length)
    elif kind == "stuck":  # the load sensor freezes at its last value
        y[sl, 0] = x[start - 1, 0]
    elif kind == "spike":  # one reading
        y[start, 2] += 8 * std[2]
    elif kind == "lost_seasonality":  # the cycle stops: load flat at its mean
        y[sl, 0] = x[:start, 0].mean() + rng.normal(0, 0.3, length)
    return y


def synthetic(tmp: Path, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    features = ["load", "temperature", "vibration"]
    normal = machine(3000, rng)
    train = tmp / "synth-normal.csv"
    write_csv(train, normal, features, None)
    model = fit(train, tmp / "synth.onnx", features)
    out: dict[str, Any] = {}
    for kind in FAULTS:
        files = []
        for k in range(5):
            x = machine(1500, rng)
            start, length = 800 + 37 * k, (1 if kind == "spike" else 300)
            y = inject(x, kind, start, length, rng)
            labels = np.zeros(len(y), int)
            labels[start : start + length] = 1
            f = tmp / f"synth-{kind}-{k}.csv"
            write_csv(f, y, features, labels)
            files.append(f)
        m, _ = evaluate(model, files, 0)
        out[kind] = m
    return out


def write_csv(path: Path, x: np.ndarray, features: list[str], labels: np.ndarray | None) -> None:
    t0 = 1_700_000_000
    head = ["ts", *features] + (["anomaly"] if labels is not None else [])
    rows = [",".join(head)]
    for i, row in enumerate(x):
        cells = [str(t0 + i), *(f"{v:.6g}" for v in row)] + ([str(labels[i])] if labels is not None else [])
        rows.append(",".join(cells))
    path.write_text("\n".join(rows) + "\n")


# ---- report ---------------------------------------------------------------------------------------


def row(name: str, m: dict[str, Any]) -> str:
    def opt(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    return (
        f"| {name} | {m['f1']:.3f} | {m['far_pct']:.1f} | {m['mar_pct']:.1f} | "
        f"{m['segments_flagged']}/{m['segments']} | {opt(m['median_flag_delay'], '.0f')} | "
        f"{m['segments_alarmed']}/{m['segments']} | {opt(m['median_alarm_delay'], '.0f')} | "
        f"{opt(m['alarm_precision'], '.2f')} | {opt(m['false_alarms_per_day'], '.1f')} |"
    )


HEADER = (
    "| run | F1 | FAR % | MAR % | events flagged | median flag delay | events alarmed | median alarm delay "
    "| alarm precision | false alarms / day |\n|---|---|---|---|---|---|---|---|---|---|"
)


def overrides(items: list[str]) -> None:
    """--set scoring.KEY=VALUE / alarm.KEY=VALUE on top of the defaults (or of --flags likelihood)."""
    import dataclasses

    from edge_lstm.alarm import AlarmPolicy
    from edge_lstm.scoring import ScoringConfig

    scoring = nab_quality.ENGINE_SETTINGS.get("scoring", ScoringConfig())
    alarms = nab_quality.ENGINE_SETTINGS.get("alarms", AlarmPolicy())
    for item in items:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        target = {"scoring": scoring, "alarm": alarms}.get(section)
        if target is None or name not in {f.name for f in dataclasses.fields(target)}:
            raise SystemExit(f"quality: --set {item}: no such setting (scoring.* or alarm.*)")
        kind = type(getattr(target, name))
        value: Any = raw if kind is str else (raw.lower() in ("1", "true")) if kind is bool else kind(raw)
        if section == "scoring":
            scoring = dataclasses.replace(scoring, **{name: value})
        else:
            alarms = dataclasses.replace(alarms, **{name: value})
    nab_quality.ENGINE_SETTINGS.update(scoring=scoring, alarms=alarms)
    print(f"quality: settings {items}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skab", type=Path, default=None, help="SKAB (default ../shared/skab)")
    ap.add_argument("--only", choices=("skab-a", "skab-b", "synth", "series", "nab"), action="append")
    ap.add_argument("--nab", type=Path, default=None, help="NAB subset (default ../shared/nab)")
    ap.add_argument("--nab-files", type=int, default=0, help="only the first N NAB files (quick look)")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "edge-lstm-quality-cache",
        help="fitted NAB models and replay dumps, reused across runs (keyed by file, fit settings, export/ sources)",
    )
    ap.add_argument("--results", type=Path, help="keep NAB's three result directories here")
    ap.add_argument(
        "--flags",
        choices=("channels", "likelihood"),
        default="channels",
        help="NAB replays with scoring.flags (likelihood: with alarm.raise_n = 1); default: the daemon's",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="every replay with this scoring.* or alarm.* setting (experiments; figures are the defaults')",
    )
    ap.add_argument("--files", type=int, default=0, help="only the first N SKAB experiments (quick look)")
    ap.add_argument("--json", type=Path, help="also write all metrics to this JSON file")
    ap.add_argument("--seed", type=int, default=0, help="fit's seed for every model (default 0, fit's default)")
    args = ap.parse_args()
    global FIT_SEED, FIT_CACHE
    FIT_SEED = args.seed
    FIT_CACHE = args.cache
    if args.flags == "likelihood":
        from edge_lstm.alarm import AlarmPolicy
        from edge_lstm.scoring import ScoringConfig

        nab_quality.ENGINE_SETTINGS.update(scoring=ScoringConfig(flags="likelihood"), alarms=AlarmPolicy(raise_n=1))
    if args.set:
        overrides(args.set)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    only = set(args.only or ("skab-a", "skab-b", "synth", "series", "nab"))
    args.skab = args.skab or nab_quality.find_shared("skab")
    args.nab = args.nab or nab_quality.find_shared("nab")
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-lstm-quality-") as d:
        tmp = Path(d)
        files: list[Path] = []
        if only & {"skab-a", "skab-b"}:
            if not (args.skab / "anomaly-free" / "anomaly-free.csv").is_file():
                print(f"quality: SKAB not found at {args.skab} (--skab DIR)", file=sys.stderr)
                return 2
            files = skab_files(args.skab)[: args.files or None]
        if "skab-a" in only:
            results["skab-a"] = protocol_a(files, tmp)
        if "skab-b" in only:
            results["skab-b"], results["af"] = protocol_b(args.skab, files, tmp)
        if "synth" in only:
            results["synth"] = synthetic(tmp)
        if "series" in only:
            results["series"] = series_quality.run(tmp, fit, nab_quality.ENGINE_SETTINGS)
        if "nab" in only:
            outs = nab_quality.run_nab(args.nab, args.cache, FIT_SEED, args.nab_files)
            results["nab"] = nab_quality.nab_report(args.nab, outs, args.results or tmp / "nab-results")
            results["nab"]["files"] = len(outs)
    print(f"quality: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(HEADER)
    for key, name in (
        ("skab-a", "SKAB per-file protocol (fit on first 400 rows)"),
        ("skab-b", "SKAB one model from anomaly-free.csv"),
    ):
        if key in results:
            print(row(f"{name}, {len(files)} files", results[key]))
    for kind, m in results.get("synth", {}).items():
        print(row(f"synthetic: {kind}", m))
    if "series" in results:
        print("\n" + "\n".join(series_quality.report(results["series"])))
    if "af" in results:
        af = results["af"]
        print(
            f"\nanomaly-free.csv through its own model: {af['alarms']} alarm(s) in {af['rows']} readings "
            f"({af['alarms_per_10k']:.2f} per 10k), {af['flagged_pct']:.1f} % of readings flagged, "
            f"alarm raised during {af['alarm_readings_pct']:.1f} % of readings"
        )
        sp = af["split"]
        print(
            f"anomaly-free.csv, second half through a model fitted on the first: {sp['alarms']} alarm(s) in "
            f"{sp['rows']} readings, {sp['flagged_pct']:.1f} % of readings flagged"
        )
    print(
        "\nSKAB leaderboard (offline, whole windows): "
        + "; ".join(f"{n} {f:.2f} / FAR {a:.1f} %" for n, f, a, _ in LEADERBOARD)
    )
    if "nab" in results:
        nab_quality.print_nab(results["nab"], results["nab"]["files"])
    calibration = {**results.get("af", {}).get("calibration", {}), **results.get("nab", {}).get("calibration", {})}
    if calibration:
        print("\ncalibration: share of readings with likelihood >= 1 - eps, against the band [eps/3, 3 eps]\n")
        print(nab_quality.CALIBRATION_HEADER)
        for name, c in calibration.items():
            print(nab_quality.calibration_row(name, c))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
