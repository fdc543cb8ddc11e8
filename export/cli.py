"""`edge-lstm-export` command line: `torch` (factory + weights → step model), `keras` (.keras/.h5 → step
model) and `fit` (CSV → model).

Every failure the user can fix is one line on stderr and exit code 2. Every option has a help text
(tests/unit/cli/test_cli_help.py); README's command table is generated from them (`./dev docs`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ExportError, FactoryError, WeightsError

EXIT_ERROR = 2
DESCRIPTION = (
    "Make the ONNX step model edge-lstm serves: export a trained PyTorch or Keras LSTM/GRU (proved "
    "numerically against the original), or fit a first forecaster on a CSV of normal operation."
)
COMMANDS = {  # name: (one line for `edge-lstm-export --help`, what the command does for its own --help)
    "torch": (
        "export a PyTorch model built by a factory, with a state_dict",
        "Exports a PyTorch LSTM/GRU model (built by --factory, weights from --weights) as a step model, "
        "checks parity with the original, and optionally calibrates its threshold on normal data.",
    ),
    "keras": (
        "export a Keras LSTM/GRU model (.keras or legacy .h5; no TensorFlow needed)",
        "Rebuilds a saved Keras LSTM/GRU model in PyTorch from its file (no TensorFlow needed), exports it "
        "as a step model and checks parity with the Keras layers' arithmetic.",
    ),
    "fit": (
        "train a small next-step LSTM forecaster on a CSV of normal operation",
        "Trains a small LSTM forecaster on a CSV of normal operation, calibrates its threshold on held-out "
        "windows, exports and checks it: a first model for your own sensors (docs/export.md).",
    ),
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The export extra's modules (pyproject.toml, [project.optional-dependencies] export).
EXTRA_MODULES = frozenset({"torch", "onnx", "onnxscript", "h5py"})
NEEDS_EXTRA = "edge-lstm-export: needs the export extra: pip install 'edge-lstm[export]'"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ExportError as e:
        print(f"edge-lstm-export: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in EXTRA_MODULES:
            raise
        print(NEEDS_EXTRA, file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="edge-lstm-export", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"edge-lstm-export {__version__}", help="print the version")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def command(name: str) -> argparse.ArgumentParser:
        help_text, description = COMMANDS[name]
        return sub.add_parser(name, help=help_text, description=description)

    t = command("torch")
    t.add_argument("--factory", required=True, help="pkg.module:callable returning the nn.Module")
    t.add_argument(
        "--weights", required=True, type=Path, help="state_dict file (torch.save), loaded with weights_only=True"
    )
    _model_io(t)
    t.add_argument(
        "--batch-first",
        choices=("auto", "yes", "no"),
        default="auto",
        help="layout of forward()'s input (default: that of the first LSTM/GRU)",
    )
    t.add_argument(
        "--horizon",
        type=int,
        default=None,
        metavar="K",
        help="encoder-decoder model (`encoder` + `decode(last, state, K)`): publish a K-step forecast",
    )
    _common(t)
    t.add_argument("--calibrate", type=Path, help="CSV of normal operation to calibrate the threshold on")
    t.set_defaults(run=_run_torch)

    k = command("keras")
    k.add_argument("model", type=Path, help="the model saved by Keras: MODEL.keras or MODEL.h5")
    _model_io(k)
    _common(k)
    k.add_argument("--calibrate", type=Path, help="CSV of normal operation to calibrate the threshold on")
    k.set_defaults(run=_run_keras)

    f = command("fit")
    f.add_argument("csv", type=Path, help="normal operation: optional ts and stream columns, one column per feature")
    f.add_argument("--features", type=_names, help="feature columns to use (default: all but ts/stream)")
    f.add_argument("--hidden", type=int, default=32, metavar="N", help="LSTM hidden units per layer (default 32)")
    f.add_argument("--layers", type=int, default=1, metavar="N", help="stacked LSTM layers (default 1)")
    f.add_argument("--epochs", type=int, default=120, help="at most this many epochs (default 120)")
    f.add_argument("--patience", type=int, default=20, help="early stopping: epochs without improvement (default 20)")
    f.add_argument(
        "--window", type=int, default=64, help="training window length, steps (shortened for short data; default 64)"
    )
    f.add_argument("--seed", type=int, default=0, help="seed of weights and batches: same data, same model (default 0)")
    f.add_argument(
        "--threads",
        type=_positive,
        default=1,
        help="torch threads while training (default 1: fastest for these models)",
    )
    f.add_argument(
        "--horizon",
        type=int,
        default=1,
        metavar="K",
        help="train an encoder-decoder model publishing a K-step forecast (default 1: next step only)",
    )
    _common(f)
    f.set_defaults(run=_run_fit)
    return p


def _model_io(p: argparse.ArgumentParser) -> None:
    """Features, output and scaling: what an exported (not trained) model needs to be told."""
    p.add_argument("--features", required=True, type=_names, help="comma-separated input feature names")
    p.add_argument(
        "--output",
        choices=("forecast", "score"),
        default="forecast",
        help="what the model outputs: a forecast of the next reading (scored by the daemon), or its own "
        "anomaly score (default forecast)",
    )
    p.add_argument(
        "--output-names",
        type=_names,
        help="comma-separated output names (default: the features for a forecast, 'score' for a one-column score)",
    )
    p.add_argument("--offset", type=_floats, help="input scaling offsets, one per feature")
    p.add_argument("--scale", type=_floats, help="input scaling scales, one per feature")


def _scaling(args: argparse.Namespace) -> dict[str, list[float]] | None:
    if (args.offset is None) != (args.scale is None):
        raise ExportError("--offset and --scale go together")
    return None if args.offset is None else {"offset": args.offset, "scale": args.scale}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    p.add_argument("--quiet", action="store_true", help="no progress display (training, calibration)")
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="int8: also quantize the weights, kept only within --quant-tolerance and when faster (default: float)",
    )
    p.add_argument(
        "--quant-tolerance",
        type=float,
        default=None,
        metavar="R",
        help="int8: largest error allowed, as a fraction of each output's normal forecast error (default 0.1)",
    )
    p.add_argument(
        "--keep-int8-if-slower",
        action="store_true",
        help="int8: write the int8 model even when it is not faster than float at batch 256 on this machine "
        "(default: the float model is written then)",
    )
    p.add_argument(
        "--quantile", type=float, default=0.999, help="quantile of normal scores used as threshold (default 0.999)"
    )
    p.add_argument(
        "--name", default=None, help="model name, carried in every result (default: model; fit: fitted-forecaster)"
    )
    p.add_argument(
        "--version",
        dest="model_version",
        default="0.1.0",
        metavar="VERSION",
        help="model version, carried in every result (default 0.1.0)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="parity tolerance: max abs error against the original (default 1e-4)",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=10,
        metavar="N",
        help="a fresh stream's first N readings are warming_up and never flag an anomaly (default 10)",
    )
    p.add_argument("--sample-interval", type=float, default=None, help="nominal seconds between readings")


def _export_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "version": args.model_version,
        "tolerance": args.tolerance,
        "warmup_steps": args.warmup_steps,
        "sample_interval_s": args.sample_interval,
        "quantize": args.quantize,
        **({"quant_tolerance": args.quant_tolerance} if args.quant_tolerance is not None else {}),
        **({"keep_int8_if_slower": True} if args.keep_int8_if_slower else {}),
        **({"progress": sys.stderr} if not args.quiet and args.command != "fit" else {}),
        "quantile": args.quantile,
        **({"name": args.name} if args.name else {}),
    }


def _run_torch(args: argparse.Namespace) -> int:
    from .api import export_torch

    model = build_model(args.factory, args.weights)
    report = export_torch(
        model,
        args.out,
        features=args.features,
        output=args.output,
        output_names=args.output_names,
        scaling=_scaling(args),
        calibrate=args.calibrate,
        batch_first={"auto": None, "yes": True, "no": False}[args.batch_first],
        provenance={"factory": args.factory, "weights": args.weights.name},
        horizon=args.horizon,
        **_export_kwargs(args),
    )
    print(report.summary())
    return 0


def _run_keras(args: argparse.Namespace) -> int:
    from .keras import export_keras

    report = export_keras(
        args.model,
        args.out,
        features=args.features,
        output=args.output,
        output_names=args.output_names,
        scaling=_scaling(args),
        calibrate=args.calibrate,
        **_export_kwargs(args),
    )
    print(report.summary())
    return 0


def _run_fit(args: argparse.Namespace) -> int:
    from .fit import FitConfig, fit_csv

    config = FitConfig(
        hidden=args.hidden,
        layers=args.layers,
        epochs=args.epochs,
        seed=args.seed,
        window=args.window,
        patience=args.patience,
        horizon=args.horizon,
        threads=args.threads,
    )
    result = fit_csv(
        args.csv,
        args.out,
        features=args.features,
        config=config,
        progress=None if args.quiet else sys.stderr,
        **_export_kwargs(args),
    )
    print(result.report.summary())
    for line in result.lines():
        print(line)
    return 0


def build_model(factory: str, weights: Path) -> Any:
    """Call the factory, load the state_dict strictly; every failure becomes a one-line error."""
    import torch
    from torch import nn

    fn = _resolve(factory)
    try:
        model = fn()
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything
        raise FactoryError(f"factory '{factory}' raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"factory '{factory}' returned {type(model).__name__}, not a torch.nn.Module")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {weights}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        # torch's message is several paragraphs with terminal escapes: keep its first sentence, plainly.
        text = _ANSI.sub("", str(e)).strip()
        first = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        raise WeightsError(
            f"{weights} is not a plain state_dict readable with weights_only=True ({first}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a common checkpoint layout
    if not isinstance(state, dict):
        raise WeightsError(f"{weights} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:4])
        raise WeightsError(
            f"the state_dict in {weights} does not match the model built by '{factory}': {detail}"
        ) from None
    return model


def _resolve(factory: str) -> Callable[[], Any]:
    mod_name, sep, attr = factory.partition(":")
    if not sep or not mod_name or not attr:
        raise FactoryError(f"--factory must look like 'package.module:callable', got '{factory}'")
    # Like `python -m`, let the user's own modules in the working directory be found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - ImportError, but also whatever the user's module raises on import
        raise FactoryError(f"cannot import module '{mod_name}' of factory '{factory}': {e}") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FactoryError(f"module '{mod_name}' has no attribute '{attr}' (factory '{factory}')")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FactoryError(f"factory '{factory}' is not callable")
    return obj  # type: ignore[no-any-return]


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


if __name__ == "__main__":
    sys.exit(main())
