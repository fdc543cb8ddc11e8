"""`edge-lstm inspect [MODEL] [--json]`: print a step model's contract (docs/model-format.md).

Loads the model exactly as the daemon does (every contract check runs), so a model that inspects
cleanly is a model `edge-lstm run` will serve. Without MODEL it inspects the packaged default model.
A model that fails the checks is reported on one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..contract import ModelFormatError
from ..onnx_model import OnnxStepModel, load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", metavar="MODEL", help="an ONNX step model (default: the model shipped inside the package)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def threshold_in_results(model: OnnxStepModel) -> float | None:
    """The `threshold` results carry for this model under the default settings: the calibrated one,
    carried to 1 − scoring.risk (scoring.extrapolate = risk, docs/scoring.md). Asked of the engine itself
    (one reading), so that inspect and results can never disagree."""
    from ..engine import Engine
    from ..reading import Reading
    from ..result import Result

    engine = Engine(model, max_streams=1)
    values = tuple(model.meta.scaling.offset[: len(model.meta.features)])  # any valid reading will do
    (out,) = engine.process([Reading("inspect", 1e9, values)])
    if not isinstance(out, Result) or out.threshold is None:  # a rejection: no threshold to tell
        return None
    return float(out.threshold)


def describe(model: OnnxStepModel) -> dict[str, Any]:
    """Everything `inspect` shows, as one JSON-ready document."""
    meta = model.meta
    io = meta.io

    def tensor(name: str, table: dict[str, Any]) -> dict[str, Any]:
        t = table[name]
        dtype = t.dtype.removeprefix("tensor(").removesuffix(")")
        return {
            "name": name,
            "dtype": "float32" if dtype == "float" else dtype,
            "shape": [d if isinstance(d, int) else (d or "batch") for d in t.shape],
        }

    path = Path(model.path)
    doc: dict[str, Any] = {
        "file": {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": model.sha256},
        "model": meta.model_id,
        "schema_version": meta.schema_version,
        "input": tensor(io.input, model.inputs),
        "output": {
            **tensor(io.output, model.outputs),
            "kind": meta.output.kind,
            "names": list(meta.output.names),
            "horizon": meta.output.steps,
        },
        "state": [
            {
                "input": tensor(p.input, model.inputs),
                "output": tensor(p.output, model.outputs),
                "per_stream_shape": list(shape),
            }
            for p, shape in zip(io.state, model.state_shapes)
        ],
        "features": [
            {"name": f, "offset": o, "scale": s}
            for f, o, s in zip(meta.features, meta.scaling.offset, meta.scaling.scale)
        ],
        "calibration": meta.calibration.model_dump(exclude_none=True) if meta.calibration else None,
        "threshold_in_results": threshold_in_results(model) if meta.calibration else None,
        "warmup_steps": meta.warmup_steps,
        "sample_interval_s": meta.sample_interval_s,
        "provenance": meta.provenance,
        "state_bytes_per_stream": 4 * sum(_prod(s) for s in model.state_shapes),
    }
    return doc


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _shape(t: dict[str, Any]) -> str:
    return "[" + ", ".join(str(d) for d in t["shape"]) + "]"


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _calibration_lines(doc: dict[str, Any]) -> list[str]:
    """The calibration section: the calibrated threshold and, when results carry another, that one."""
    lines: list[str] = []
    add = lines.append
    o = doc["output"]
    cal = doc["calibration"]
    if cal is None:
        add("calibration  none: `score` flags nothing; `deviation` still learns each stream on its own")
    else:
        q = f", quantile {_num(cal['quantile'])}" if "quantile" in cal else ""
        n = f", from {cal['samples']} samples" if "samples" in cal else ""
        add(f"calibration  threshold {_num(cal['threshold'])}{q}{n} (the calibrated one)")
        in_results = doc["threshold_in_results"]
        if in_results is not None and _num(in_results) != _num(cal["threshold"]):
            add(
                f"             results carry threshold {_num(in_results)}: the calibrated one carried to "
                "1 - scoring.risk (scoring.extrapolate = risk, docs/scoring.md)"
            )
        if "residual_mean" in cal:
            add("             output               residual mean  residual std")
            for name, mu, sd in zip(o["names"], cal["residual_mean"], cal["residual_std"]):
                add(f"             {name:<20} {_num(mu):>13} {_num(sd):>13}")
        if cal.get("states"):
            add(f"             {len(cal['states'])} known normal operating states (the deviation channel's)")
        if cal.get("bias_scale"):
            add(f"             bias thresholds x {_num(cal['bias_scale'])} (the calibration data's own bias)")
    return lines


def render_text(doc: dict[str, Any]) -> str:
    """The human-readable form of `describe()`."""
    lines: list[str] = []
    add = lines.append
    m = doc["model"]
    add(f"model        {m['name']} {m['version']}   (schema version {doc['schema_version']})")
    f = doc["file"]
    add(f"file         {f['path']}")
    add(f"             {f['bytes']} bytes, sha256 {f['sha256']}")
    i = doc["input"]
    add(f"input        {i['name']}  {i['dtype']} {_shape(i)}  (scaled features, one row per stream)")
    o = doc["output"]
    add(f"output       {o['name']}  {o['dtype']} {_shape(o)}  kind={o['kind']}  names={', '.join(o['names'])}")
    if o["horizon"] > 1:
        add(f"             horizon {o['horizon']}: a {o['horizon']}-step forecast per reading, published as `forecast`")
    add(f"state        {len(doc['state'])} tensor pair(s), {doc['state_bytes_per_stream']} bytes per stream")
    for s in doc["state"]:
        add(f"             {s['input']['name']} -> {s['output']['name']}  {_shape(s['input'])}")
    add("features     name                 offset        scale     (model sees (value - offset) / scale)")
    for feat in doc["features"]:
        add(f"             {feat['name']:<20} {_num(feat['offset']):>10} {_num(feat['scale']):>12}")
    lines += _calibration_lines(doc)
    add(f"warm-up      {doc['warmup_steps']} steps")
    si = doc["sample_interval_s"]
    add(f"interval     {_num(si) + ' s between readings' if si is not None else 'not given'}")
    prov = doc["provenance"]
    if not prov:
        add("provenance   none")
    else:
        first = True
        for key, value in prov.items():
            shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
            add(f"{'provenance' if first else '':<12} {key}: {shown}")
            first = False
        if "parity" not in prov:
            add("             parity: not recorded")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    try:
        model = load_model(args.model)
    except ModelFormatError as e:
        what = args.model if args.model else "the packaged default model"
        msg = " ".join(str(e).split())  # one line, whatever onnxruntime put in it
        print(f"edge-lstm inspect: {what}: {msg}", file=sys.stderr)
        return 2
    doc = describe(model)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_text(doc))
    return 0
