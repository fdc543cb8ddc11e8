"""Small ONNX LSTM step models for tests, built with the `onnx` helper API (no torch).

`make_step_model(path, ...)` writes a model that meets docs/model-format.md and loads with
`edge_lstm.load_model`. The graph is what the exporter produces for one `nn.LSTM` + linear head:

    x [batch, F] --Unsqueeze(0)--> [1, batch, F]
    h_in, c_in [batch, layers, hidden] --Transpose(1,0,2)--> [layers, batch, hidden]
    per layer: LSTM (layout 0) -> Y [1, 1, batch, hidden], Y_h, Y_c [1, batch, hidden]
    last Y --Squeeze--> [batch, hidden] --MatMul+Add--> y [batch, n_out]
    stacked Y_h/Y_c --Transpose(1,0,2)--> h_out, c_out [batch, layers, hidden]

Weights are small random numbers from `seed`, so the model is deterministic and its outputs vary with
its state (tests can tell a stepped stream from a fresh one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def make_step_model(
    path: str | Path,
    features: Sequence[str] = ("a", "b", "c"),
    hidden: int = 8,
    layers: int = 1,
    kind: str = "forecast",
    seed: int = 0,
    calibration: bool = True,
    warmup_steps: int = 2,
    name: str = "test-model",
) -> Path:
    """Write an ONNX LSTM step model to `path` and return the path."""
    path = Path(path)
    features = list(features)
    nf = len(features)
    if kind not in ("forecast", "score"):
        raise ValueError(f"kind must be 'forecast' or 'score', got {kind!r}")
    out_names = list(features) if kind == "forecast" else ["score"]
    n_out = len(out_names)
    rng = np.random.default_rng(seed)

    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    axes0 = const("axes0", np.array([0], dtype=np.int64))
    nodes.append(helper.make_node("Unsqueeze", ["x", axes0], ["x_seq"]))  # [1, batch, F]
    nodes.append(helper.make_node("Transpose", ["state.lstm.h.in"], ["h_tm"], perm=[1, 0, 2]))
    nodes.append(helper.make_node("Transpose", ["state.lstm.c.in"], ["c_tm"], perm=[1, 0, 2]))

    seq = "x_seq"
    h_outs, c_outs = [], []
    in_size = nf
    for layer in range(layers):
        w = const(f"W{layer}", (rng.standard_normal((1, 4 * hidden, in_size)) * 0.4).astype(np.float32))
        r = const(f"R{layer}", (rng.standard_normal((1, 4 * hidden, hidden)) * 0.4).astype(np.float32))
        b = const(f"B{layer}", (rng.standard_normal((1, 8 * hidden)) * 0.1).astype(np.float32))
        start = const(f"start{layer}", np.array([layer], dtype=np.int64))
        end = const(f"end{layer}", np.array([layer + 1], dtype=np.int64))
        nodes.append(helper.make_node("Slice", ["h_tm", start, end, axes0], [f"h0_{layer}"]))
        nodes.append(helper.make_node("Slice", ["c_tm", start, end, axes0], [f"c0_{layer}"]))
        nodes.append(
            helper.make_node(
                "LSTM",
                [seq, w, r, b, "", f"h0_{layer}", f"c0_{layer}"],
                [f"Y{layer}", f"Yh{layer}", f"Yc{layer}"],
                hidden_size=hidden,
                layout=0,
            )
        )
        # Y: [seq=1, dirs=1, batch, hidden] -> [1, batch, hidden] for the next layer
        ax1 = const(f"ax1_{layer}", np.array([1], dtype=np.int64))
        nodes.append(helper.make_node("Squeeze", [f"Y{layer}", ax1], [f"Yseq{layer}"]))
        seq = f"Yseq{layer}"
        h_outs.append(f"Yh{layer}")
        c_outs.append(f"Yc{layer}")
        in_size = hidden

    if layers == 1:
        nodes.append(helper.make_node("Identity", [h_outs[0]], ["h_tm_out"]))
        nodes.append(helper.make_node("Identity", [c_outs[0]], ["c_tm_out"]))
    else:
        nodes.append(helper.make_node("Concat", h_outs, ["h_tm_out"], axis=0))
        nodes.append(helper.make_node("Concat", c_outs, ["c_tm_out"], axis=0))
    nodes.append(helper.make_node("Transpose", ["h_tm_out"], ["state.lstm.h.out"], perm=[1, 0, 2]))
    nodes.append(helper.make_node("Transpose", ["c_tm_out"], ["state.lstm.c.out"], perm=[1, 0, 2]))

    nodes.append(helper.make_node("Squeeze", [seq, axes0], ["feat"]))  # [batch, hidden]
    hw = const("head_W", (rng.standard_normal((hidden, n_out)) * 0.3).astype(np.float32))
    hb = const("head_b", (rng.standard_normal((n_out,)) * 0.05).astype(np.float32))
    nodes.append(helper.make_node("MatMul", ["feat", hw], ["head_mm"]))
    nodes.append(helper.make_node("Add", ["head_mm", hb], ["y"]))

    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("x", f32, ["batch", nf]),
        helper.make_tensor_value_info("state.lstm.h.in", f32, ["batch", layers, hidden]),
        helper.make_tensor_value_info("state.lstm.c.in", f32, ["batch", layers, hidden]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", f32, ["batch", n_out]),
        helper.make_tensor_value_info("state.lstm.h.out", f32, ["batch", layers, hidden]),
        helper.make_tensor_value_info("state.lstm.c.out", f32, ["batch", layers, hidden]),
    ]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edge-lstm-tests",
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14

    meta: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "version": "0.0.1",
        "features": features,
        "scaling": {"offset": [0.0] * nf, "scale": [1.0] * nf},
        "output": {"kind": kind, "names": out_names},
        "io": {
            "input": "x",
            "output": "y",
            "state": [
                {"input": "state.lstm.h.in", "output": "state.lstm.h.out"},
                {"input": "state.lstm.c.in", "output": "state.lstm.c.out"},
            ],
        },
        "sample_interval_s": 1.0,
        "warmup_steps": warmup_steps,
        "provenance": {"tool": "tests/support/models.py", "onnx": onnx.__version__, "seed": seed},
    }
    if calibration:
        if kind == "forecast":
            meta["calibration"] = {
                "residual_mean": [0.0] * n_out,
                "residual_std": [1.0] * n_out,
                "threshold": 3.0,
                "quantile": 0.999,
                "samples": 1000,
            }
        else:
            meta["calibration"] = {"threshold": 0.5}
    helper.set_model_props(model, {"edge_lstm": json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
