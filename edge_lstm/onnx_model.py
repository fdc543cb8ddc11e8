"""The ONNX step model at the edge: load a file, check it against the contract, run one step.

The engine only sees the `StepModel` protocol, so tests and benchmarks can substitute their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .contract import METADATA_KEY, ModelFormatError, ModelMeta, parse_meta

DEFAULT_MODEL = "default.onnx"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("edge_lstm.data").joinpath(DEFAULT_MODEL)))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OnnxStepModel:
    """A step model served by an onnxruntime CPU session."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFormatError(f"model file not found: {self.path}")
        opts = ort.SessionOptions()
        # Small step graphs: one thread avoids scheduling overhead on a 2-4 core Pi, and no spinning
        # keeps idle threads from burning CPU between steps.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelFormatError(f"{self.path} is not a loadable ONNX model: {e}") from None
        meta_map = self.session.get_modelmeta().custom_metadata_map
        self.meta = parse_meta(meta_map.get(METADATA_KEY))
        self.sha256 = file_sha256(self.path)
        self.inputs = {i.name: TensorInfo(i.name, i.type, tuple(i.shape)) for i in self.session.get_inputs()}
        self.outputs = {o.name: TensorInfo(o.name, o.type, tuple(o.shape)) for o in self.session.get_outputs()}
        self.state_shapes = check_graph(self.meta, self.inputs, self.outputs)
        io = self.meta.io
        self._in_names = [io.input] + [p.input for p in io.state]
        self._out_names = [io.output] + [p.output for p in io.state]
        self.n_outputs = int(self.outputs[io.output].shape[1])  # type: ignore[arg-type]

    def step(self, x: np.ndarray, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = dict(zip(self._in_names, [x, *states]))
        y, *new_states = self.session.run(self._out_names, feeds)
        return y, new_states


def check_graph(
    meta: ModelMeta, inputs: dict[str, TensorInfo], outputs: dict[str, TensorInfo]
) -> list[tuple[int, ...]]:
    """Check the graph's tensors against the metadata; return the per-stream shape of each state."""
    io = meta.io
    _check_names(meta, inputs, outputs)
    for t in [*inputs.values(), *outputs.values()]:
        _check_tensor(t)
    x = inputs[io.input]
    n_features = len(meta.features)
    if x.shape[1:] != (n_features,):
        raise ModelFormatError(
            f"input '{x.name}' has shape {list(x.shape)} but the metadata lists {n_features} features"
        )
    y = outputs[io.output]
    if len(y.shape) != 2 or y.shape[1] != meta.output.columns:
        per = f" x output.horizon {meta.output.steps} steps" if meta.output.steps > 1 else ""
        raise ModelFormatError(
            f"output '{y.name}' has shape {list(y.shape)} but metadata output.names lists "
            f"{len(meta.output.names)} columns{per}"
        )
    shapes = []
    for p in io.state:
        si, so = inputs[p.input].shape, outputs[p.output].shape
        if si[1:] != so[1:]:
            raise ModelFormatError(f"state pair '{p.input}' -> '{p.output}' changes shape: {list(si)} vs {list(so)}")
        shapes.append(tuple(int(d) for d in si[1:]))  # type: ignore[arg-type]
    return shapes


def _check_names(meta: ModelMeta, inputs: dict[str, TensorInfo], outputs: dict[str, TensorInfo]) -> None:
    """The graph has exactly the tensors the metadata's `io` section names."""
    io = meta.io
    want_in = [io.input] + [p.input for p in io.state]
    want_out = [io.output] + [p.output for p in io.state]
    for name in want_in:
        if name not in inputs:
            raise ModelFormatError(
                f"metadata names input tensor '{name}' but the graph has no such input (inputs: {sorted(inputs)})"
            )
    for name in want_out:
        if name not in outputs:
            raise ModelFormatError(
                f"metadata names output tensor '{name}' but the graph has no such output (outputs: {sorted(outputs)})"
            )
    extra = sorted(set(inputs) - set(want_in)) + sorted(set(outputs) - set(want_out))
    if extra:
        raise ModelFormatError(f"graph tensors {extra} are not listed in the metadata 'io' section")


def _check_tensor(t: TensorInfo) -> None:
    """float32, a dynamic batch axis 0 and fixed other axes."""
    if t.dtype != "tensor(float)":
        raise ModelFormatError(f"tensor '{t.name}' is {t.dtype}; every tensor must be float32")
    if not t.shape or isinstance(t.shape[0], int):
        raise ModelFormatError(f"tensor '{t.name}' has shape {list(t.shape)}: axis 0 must be the dynamic batch axis")
    if any(not isinstance(d, int) for d in t.shape[1:]):
        raise ModelFormatError(f"tensor '{t.name}' has shape {list(t.shape)}: only axis 0 may be dynamic")


def load_model(path: str | Path | None = None, *, threads: int = 1) -> OnnxStepModel:
    """Open a step model (the packaged default when `path` is None) and check its contract."""
    return OnnxStepModel(path if path is not None else default_model_path(), threads=threads)
