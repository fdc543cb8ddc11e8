"""Step wrapper → ONNX file, and the metadata entry of the contract (docs/model-format.md).

We use the TorchScript exporter (`dynamo=False`): with torch 2.13 it emits one ONNX `LSTM`/`GRU` node
per layer with layout 0 (onnxruntime CPU rejects layout 1), weights as initializers (which dynamic
quantization needs), and honours `dynamic_axes` for every input and output.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch

from edge_lstm.contract import METADATA_KEY, ModelMeta, parse_meta

from .errors import UnsupportedModelError
from .seq2seq import Seq2SeqStep
from .stateful import StepWrapper

INPUT_NAME = "x"
OUTPUT_NAME = "y"
OPSET = 17
# An example batch of 1 can be frozen into the graph as a constant; 2 cannot be mistaken for it.
_EXAMPLE_BATCH = 2


def export_step(wrapper: StepWrapper | Seq2SeqStep, n_features: int) -> onnx.ModelProto:
    """Trace the step wrapper into an in-memory ONNX model with a dynamic batch axis everywhere."""
    x = torch.zeros(_EXAMPLE_BATCH, n_features)
    states = wrapper.zero_states(_EXAMPLE_BATCH)
    in_names = [INPUT_NAME] + [s.input_name for s in wrapper.specs]
    out_names = [OUTPUT_NAME] + [s.output_name for s in wrapper.specs]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy-exporter deprecation notice and the "batch size other than 1 with LSTM" warning do
        # not apply: h0/c0 are explicit inputs, which is exactly the fix that warning recommends.
        warnings.simplefilter("ignore")
        try:
            with _captured_output() as printed:
                _export(wrapper, (x, *states), buf, in_names, out_names)
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; the first line says which op failed
            # The exporter has also printed its whole TorchScript IR (tens of lines) to stderr: dropped,
            # the error is one line.
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnsupportedModelError(f"torch.onnx cannot export the step model: {first}") from None
    if printed.text.strip():
        sys.stderr.write(printed.text)  # a successful export's own notes are passed on
    return onnx.load_from_string(buf.getvalue())


class _Printed:
    text = ""


@contextlib.contextmanager
def _captured_output() -> Iterator[_Printed]:
    """Capture what is written to file descriptors 1 and 2 (the exporter's C++ side prints there too)."""
    out = _Printed()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield out
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            out.text = tmp.read().decode("utf-8", "replace")


def _export(
    wrapper: StepWrapper | Seq2SeqStep,
    args: tuple[torch.Tensor, ...],
    buf: io.BytesIO,
    in_names: list[str],
    out_names: list[str],
) -> None:
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            args,
            buf,  # type: ignore[arg-type]  # a file object works (torch.onnx docs); the stub says path
            dynamo=False,
            opset_version=OPSET,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes={n: {0: "batch"} for n in in_names + out_names},
            do_constant_folding=True,
        )


def io_section(wrapper: StepWrapper | Seq2SeqStep) -> dict[str, Any]:
    return {
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "state": [{"input": s.input_name, "output": s.output_name} for s in wrapper.specs],
    }


def set_metadata(model: onnx.ModelProto, meta: dict[str, Any]) -> ModelMeta:
    """Validate `meta` against the contract and store it under the `edge_lstm` key (replacing any)."""
    parsed = parse_meta(json.dumps(meta))  # fail here, with the contract's message, not at load time
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, parsed.to_json()
    return parsed


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]
