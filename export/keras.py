"""Keras models → step models, without TensorFlow and without keras.

A `.keras` file (a zip of `config.json` + `model.weights.h5`) or a legacy `.h5` (`model_config`
attribute + `model_weights` group) is read with json and h5py only. Its layers are rebuilt as the
equivalent torch modules (`nn.LSTM`/`nn.GRU` batch-first, `nn.Linear`, `nn.LayerNorm`) inside a
`KerasModel` whose `forward(x)` runs a whole sequence from zero state, and that goes through
`export_torch`: parity, quantization, calibration and metadata are the same as for a PyTorch model.

`KerasModel.forward` always returns every step `[B, T, O]`. For a model whose last recurrent layer has
`return_sequences=False` that is the same thing as Keras's output on every prefix: the step model's
output after reading `x[t]` is `model.predict(x[:, : t + 1])` (the layers after it act on each step
alone), which is what a streaming model publishes.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from .api import ExportReport, export_torch
from .errors import FeatureMismatchError, UnsupportedModelError, WeightsError

SUPPORTED = ("InputLayer", "LSTM", "GRU", "Dense", "TimeDistributed(Dense)", "Dropout", "LayerNormalization")
# Layers that are the identity at inference.
_IDENTITY = frozenset({"Dropout", "SpatialDropout1D", "GaussianDropout", "GaussianNoise", "AlphaDropout"})
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
_REFUSED_WHY = {
    "Bidirectional": "its backward direction needs future readings, which a streaming step model never has",
    "ConvLSTM1D": "convolutional recurrent layers have no torch equivalent",
    "SimpleRNN": "only LSTM and GRU are read from Keras models",
    "Masking": "masking skips time steps, which a step model always reads",
    "Attention": "attention mixes time steps",
    "MultiHeadAttention": "attention mixes time steps",
    "GlobalAveragePooling1D": "pooling over time mixes time steps",
    "GlobalMaxPooling1D": "pooling over time mixes time steps",
    "Flatten": "flattening a sequence mixes time steps",
    "RepeatVector": "repeating a vector over time is not a step-wise layer",
}


@dataclass
class KerasLayer:
    """One layer of the Keras model as read from its config, with its weights in build order."""

    name: str
    type: str  # the Keras class name
    config: dict[str, Any]
    weights: list[np.ndarray] = field(default_factory=list)
    inner: KerasLayer | None = None  # TimeDistributed's layer

    @property
    def label(self) -> str:
        return f"layer '{self.name}' ({self.type})"


@dataclass
class KerasFile:
    """What was read from a Keras file: the layers from input to output, and where they came from."""

    path: Path
    format: str  # "keras" or "h5"
    model_class: str  # Sequential / Functional
    model_name: str
    keras_version: str | None
    n_features: int | None  # the last axis of the input, when the config says it
    layers: list[KerasLayer]


# ---- reading ---------------------------------------------------------------------------------------------


def read_keras(path: str | Path) -> KerasFile:
    """Read a `.keras` or legacy `.h5` model (config and weights) with json and h5py only."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Keras model file not found: {path}")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    if h5py.is_hdf5(path):
        return _read_h5(path)
    raise WeightsError(f"{path} is neither a .keras file (zip) nor a legacy .h5 (HDF5) Keras model")


def _read_zip(path: Path) -> KerasFile:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "config.json" not in names or "model.weights.h5" not in names:
                raise WeightsError(f"{path} is a zip without config.json and model.weights.h5: not a .keras model")
            config = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
            weights = z.read("model.weights.h5")
    except (zipfile.BadZipFile, json.JSONDecodeError, OSError) as e:
        raise WeightsError(f"cannot read {path} as a .keras model: {e}") from None
    model_class, model_name, layers, n_features = _parse_config(config, path)
    with h5py.File(io.BytesIO(weights), "r") as f:
        _weights_from_keras_v3(f, model_class, layers, path)
    return KerasFile(path, "keras", model_class, model_name, _str(meta.get("keras_version")), n_features, layers)


def _read_h5(path: Path) -> KerasFile:
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None or "model_weights" not in f:
                raise WeightsError(
                    f"{path} holds weights only (no model_config): save the whole model with model.save(...)"
                )
            config = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
            model_class, model_name, layers, n_features = _parse_config(config, path)
            group = f["model_weights"]
            _weights_from_legacy_h5(group, layers, path)
            version = f.attrs.get("keras_version", group.attrs.get("keras_version"))
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(f"cannot read {path} as a Keras .h5 model: {e}") from None
    return KerasFile(path, "h5", model_class, model_name, _str(version), n_features, layers)


def _str(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def _parse_config(config: Any, path: Path) -> tuple[str, str, list[KerasLayer], int | None]:
    """Top-level config → (model class, name, layers input→output, feature count if known)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise WeightsError(f"{path}: the model config is not a Keras model description")
    cls = str(config["class_name"])
    body = config.get("config") or {}
    name = str(body.get("name", cls)) if isinstance(body, dict) else cls
    if cls == "Sequential":
        raw = body["layers"] if isinstance(body, dict) else body
        layers = [_layer(c) for c in raw]
        n_features = _shape_features(body.get("build_input_shape")) if isinstance(body, dict) else None
    elif cls in ("Functional", "Model"):
        layers = _chain(body)
        n_features = None
    else:
        raise UnsupportedModelError(
            f"model '{name}' ({cls}) is a subclassed model: its config does not describe its layers; "
            "rebuild it as a Sequential or functional model"
        )
    for layer in layers:
        for key in ("batch_shape", "batch_input_shape"):
            if n_features is None and layer.config.get(key) is not None:
                n_features = _shape_features(layer.config[key], layer)
    return cls, name, layers, n_features


def _shape_features(shape: Any, layer: KerasLayer | None = None) -> int | None:
    if not isinstance(shape, (list, tuple)) or not shape:
        return None
    if len(shape) != 3:
        what = layer.label if layer else "the model"
        raise UnsupportedModelError(
            f"{what} takes input of shape {list(shape)}: a step model needs sequences [batch, time, features]"
        )
    return None if shape[-1] is None else int(shape[-1])


def _layer(c: dict[str, Any]) -> KerasLayer:
    config = c.get("config") or {}
    layer = KerasLayer(str(config.get("name", c.get("name", "?"))), str(c.get("class_name", "?")), config)
    if layer.type == "TimeDistributed" and isinstance(config.get("layer"), dict):
        layer.inner = _layer(config["layer"])
    return layer


def _chain(body: dict[str, Any]) -> list[KerasLayer]:
    """A functional model's layers from its one input to its one output; refuse branches and merges."""
    by_name: dict[str, tuple[KerasLayer, list[str]]] = {}
    for c in body.get("layers", []):
        layer = _layer(c)
        by_name[str(c.get("name", layer.name))] = (layer, _inbound(c, layer))
    inputs, outputs = _endpoints(body.get("input_layers")), _endpoints(body.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModelError(
            f"functional model '{body.get('name')}' has {len(inputs)} inputs and {len(outputs)} outputs: "
            "a step model reads one sequence and gives one output"
        )
    chain: list[KerasLayer] = []
    at = outputs[0]
    while True:
        if at not in by_name:
            raise WeightsError(f"functional model '{body.get('name')}' refers to unknown layer '{at}'")
        layer, parents = by_name[at]
        chain.append(layer)
        if at == inputs[0]:
            break
        if len(parents) != 1:
            raise UnsupportedModelError(
                f"{layer.label} takes {len(parents)} inputs ({', '.join(parents) or 'none'}): only a chain "
                "of single-input layers from the input to the output is supported"
            )
        at = parents[0]
    chain.reverse()
    on_chain = {id(x) for x in chain}
    for layer, _ in by_name.values():
        if id(layer) not in on_chain:
            raise UnsupportedModelError(
                f"{layer.label} is not on the path from the input to the output: branching models are not supported"
            )
    return chain


def _endpoints(spec: Any) -> list[str]:
    """`input_layers`/`output_layers`: `[name, 0, 0]` or `[[name, 0, 0], ...]`."""
    if not spec:
        return []
    if isinstance(spec[0], str):
        return [spec[0]]
    return [str(s[0]) for s in spec]


def _inbound(c: dict[str, Any], layer: KerasLayer) -> list[str]:
    """The names of the layers feeding this one (Keras 3 and Keras 2 config formats)."""
    nodes = c.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise UnsupportedModelError(f"{layer.label} is called {len(nodes)} times (a shared layer): not supported")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [keras tensors...], "kwargs": {...}}
        found: list[str] = []
        _tensors(node.get("args", []), found)
        return found
    return [str(ref[0]) for ref in node]  # Keras 2: [[name, node, tensor, kwargs], ...]


def _tensors(obj: Any, found: list[str]) -> None:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            found.append(str(obj["config"]["keras_history"][0]))
            return
        for v in obj.values():
            _tensors(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _tensors(v, found)


def _snake(name: str) -> str:
    """keras.src.utils.naming.to_snake_case: how a `.keras` file names a layer's weight group."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _weights_from_keras_v3(f: h5py.File, model_class: str, layers: list[KerasLayer], path: Path) -> None:
    """`.keras` weights are addressed by position: `layers/<snake class name>[_k]/vars/<i>`.

    (Sequential's layer list omits its InputLayer, Functional's keeps it; InputLayer has no weights and
    its own counter, so the other names are the same either way.)"""
    used: dict[str, int] = {}
    for layer in layers:
        if model_class == "Sequential" and layer.type == "InputLayer":
            continue
        base = _snake(layer.type)
        key = base if base not in used else f"{base}_{used[base] + 1}"
        used[base] = used.get(base, -1) + 1
        sub = {"LSTM": "cell/vars", "GRU": "cell/vars", "TimeDistributed": "layer/vars"}.get(layer.type, "vars")
        group = f.get(f"layers/{key}/{sub}")
        arrays = _numbered(group) if isinstance(group, h5py.Group) else []
        if layer.type == "TimeDistributed" and layer.inner is not None:
            layer.inner.weights = arrays
        else:
            layer.weights = arrays


def _numbered(group: h5py.Group) -> list[np.ndarray]:
    keys = sorted((k for k in group.keys() if k.isdigit()), key=int)
    return [np.asarray(group[k], dtype=np.float32) for k in keys]


def _weights_from_legacy_h5(group: h5py.Group, layers: list[KerasLayer], path: Path) -> None:
    """Legacy `.h5`: `model_weights/<layer name>` lists its datasets in build order in `weight_names`."""
    for layer in layers:
        if layer.name not in group:
            continue
        g = group[layer.name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
        try:
            arrays = [np.asarray(g[n], dtype=np.float32) for n in names]
        except KeyError as e:
            raise WeightsError(f"{path}: weights of {layer.label} are incomplete: {e}") from None
        if layer.type == "TimeDistributed" and layer.inner is not None:
            layer.inner.weights = arrays
        else:
            layer.weights = arrays


# ---- rebuilding as torch ---------------------------------------------------------------------------------


class KerasModel(nn.Module):
    """The rebuilt Keras model: `forward(x[B, T, F]) -> [B, T, O]` from zero state, every step.

    Submodules are named after the Keras layers, so the step model's states are `state.<layer>.h/.c`."""

    def __init__(self, layers: list[tuple[str, nn.Module]], n_features: int) -> None:
        super().__init__()
        self.names: list[str] = []
        for name, module in layers:
            key = re.sub(r"\W", "_", name) or "layer"
            while key in self.names or hasattr(self, key):
                key += "_"
            self.add_module(key, module)
            self.names.append(key)
        self.n_features = n_features

    @property
    def layers(self) -> list[nn.Module]:
        return [self.get_submodule(n) for n in self.names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            m = getattr(self, name)
            x = m(x)[0] if isinstance(m, nn.RNNBase) else m(x)  # an RNN also returns its state: the exporter's
        return x


def build_torch(kf: KerasFile) -> KerasModel:
    """Rebuild `kf`'s layers as torch modules with the Keras weights; refuse what torch cannot express."""
    mods: list[tuple[str, nn.Module]] = []
    width = kf.n_features  # the last axis flowing into the next layer
    ended: KerasLayer | None = None  # a recurrent layer with return_sequences=False was seen
    for layer in kf.layers:
        t = layer.type
        if t == "InputLayer":
            continue
        if t in _IDENTITY:
            continue
        if t in ("LSTM", "GRU"):
            if ended is not None:
                raise UnsupportedModelError(
                    f"{layer.label} follows {ended.label}, which returns its last step only (return_sequences=False)"
                )
            rnn, width = _recurrent(layer, width)
            mods.append((layer.name, rnn))
            if not layer.config.get("return_sequences", False):
                ended = layer
        elif t == "Dense" or (t == "TimeDistributed" and layer.inner is not None and layer.inner.type == "Dense"):
            dense = layer.inner if t == "TimeDistributed" and layer.inner is not None else layer
            linear, act, width = _dense(dense, width, label=layer.label)
            mods.append((layer.name, linear))
            if act is not None:
                mods.append((f"{layer.name}_activation", act))
        elif t == "Activation":
            act = _activation(layer.config.get("activation"), layer, "activation")
            if act is not None:
                mods.append((layer.name, act))
        elif t == "LayerNormalization":
            norm, width = _layer_norm(layer, width)
            mods.append((layer.name, norm))
        elif t == "TimeDistributed":
            inner = layer.inner
            raise UnsupportedModelError(
                f"{layer.label} wraps {inner.label if inner else 'an unknown layer'}: only TimeDistributed(Dense) "
                "is supported"
            )
        else:
            why = _REFUSED_WHY.get(t, f"the Keras exporter reads only {', '.join(SUPPORTED)}")
            raise UnsupportedModelError(f"{layer.label} is not supported: {why}")
    if not any(isinstance(m, nn.RNNBase) for _, m in mods):
        raise UnsupportedModelError(f"Keras model '{kf.model_name}' has no LSTM or GRU layer: nothing carries state")
    first = next(layer for layer in kf.layers if layer.type in ("LSTM", "GRU"))
    n_features = kf.n_features if kf.n_features is not None else int(first.weights[0].shape[0])
    return KerasModel(mods, n_features).eval()


def _check_common(layer: KerasLayer) -> None:
    c = layer.config
    if c.get("go_backwards"):
        raise UnsupportedModelError(
            f"{layer.label} has go_backwards=True: it reads the sequence from the end, which a step model never has"
        )
    if c.get("stateful"):
        raise UnsupportedModelError(
            f"{layer.label} is stateful=True: save the model with stateful=False (the step model carries the "
            "state itself, per stream)"
        )
    if c.get("return_state"):
        raise UnsupportedModelError(f"{layer.label} has return_state=True: its state outputs are not supported")
    if c.get("time_major"):
        raise UnsupportedModelError(f"{layer.label} has time_major=True: not supported")
    act, rec = _act_name(c.get("activation", "tanh")), _act_name(c.get("recurrent_activation", "sigmoid"))
    if act != "tanh" or rec != "sigmoid":
        raise UnsupportedModelError(
            f"{layer.label} has activation={act!r}, recurrent_activation={rec!r}: torch's LSTM/GRU "
            "compute activation='tanh', recurrent_activation='sigmoid' only"
        )


def _recurrent(layer: KerasLayer, width: int | None) -> tuple[nn.LSTM | nn.GRU, int]:
    """Keras kernel `[in, G*H]`, recurrent kernel `[H, G*H]`, bias → torch weight_ih `[G*H, in]` etc.

    LSTM: both use gate order i, f, c(g), o, so only the transposition differs; Keras's single bias goes
    into bias_ih (bias_hh zero). GRU: Keras z, r, h → torch r, z, n; `reset_after=True` has one input
    and one recurrent bias row, exactly torch's b_i* and b_h*."""
    _check_common(layer)
    c = layer.config
    units = int(c["units"])
    is_lstm = layer.type == "LSTM"
    gates = 4 if is_lstm else 3
    use_bias = bool(c.get("use_bias", True))
    if not is_lstm and not c.get("reset_after", True):
        raise UnsupportedModelError(
            f"{layer.label} has reset_after=False: torch's GRU applies the reset gate after the recurrent "
            "matmul (reset_after=True, the Keras 3 default) and cannot express the other form; retrain with "
            "reset_after=True"
        )
    w = layer.weights
    if len(w) != (3 if use_bias else 2):
        raise WeightsError(f"{layer.label}: expected {3 if use_bias else 2} weight arrays, found {len(w)}")
    kernel, rec = w[0], w[1]
    n_in = int(kernel.shape[0])
    if width is not None and n_in != width:
        raise WeightsError(f"{layer.label}: kernel takes {n_in} inputs but the layer before gives {width}")
    _shape(layer, "kernel", kernel, (n_in, gates * units))
    _shape(layer, "recurrent_kernel", rec, (units, gates * units))
    order = _gru_order(units) if not is_lstm else np.arange(gates * units)
    rnn: nn.LSTM | nn.GRU = (nn.LSTM if is_lstm else nn.GRU)(n_in, units, batch_first=True, bias=use_bias)
    params = {"weight_ih_l0": kernel.T[order], "weight_hh_l0": rec.T[order]}
    if use_bias:
        bias = w[2]
        if is_lstm:
            _shape(layer, "bias", bias, (gates * units,))
            b_ih, b_hh = bias, np.zeros_like(bias)
        else:
            _shape(layer, "bias", bias, (2, gates * units))
            b_ih, b_hh = bias[0], bias[1]
        params |= {"bias_ih_l0": b_ih[order], "bias_hh_l0": b_hh[order]}
    _assign(rnn, params)
    return rnn, units


def _gru_order(units: int) -> np.ndarray:
    z, r, h = (np.arange(units) + k * units for k in range(3))
    return np.concatenate([r, z, h])


def _dense(layer: KerasLayer, width: int | None, *, label: str) -> tuple[nn.Linear, nn.Module | None, int]:
    c = layer.config
    units = int(c["units"])
    use_bias = bool(c.get("use_bias", True))
    w = layer.weights
    if len(w) != (2 if use_bias else 1):
        raise WeightsError(f"{label}: expected {2 if use_bias else 1} weight arrays, found {len(w)}")
    kernel = w[0]
    n_in = int(kernel.shape[0])
    if width is not None and n_in != width:
        raise WeightsError(f"{label}: kernel takes {n_in} inputs but the layer before gives {width}")
    _shape(layer, "kernel", kernel, (n_in, units))
    linear = nn.Linear(n_in, units, bias=use_bias)
    params = {"weight": kernel.T}
    if use_bias:
        _shape(layer, "bias", w[1], (units,))
        params["bias"] = w[1]
    _assign(linear, params)
    act = _activation(c.get("activation", "linear"), layer, "activation", label=label)
    return linear, act, units


def _act_name(spec: Any) -> str:
    if isinstance(spec, dict):  # Keras 3 may serialize a function as {"class_name": "function", "config": "relu"}
        inner = spec.get("config")
        return str(inner if isinstance(inner, str) else spec.get("class_name"))
    return "linear" if spec is None else str(spec)


def _activation(spec: Any, layer: KerasLayer, what: str, *, label: str | None = None) -> nn.Module | None:
    name = _act_name(spec)
    if name not in _ACTIVATIONS:
        raise UnsupportedModelError(
            f"{label or layer.label} has {what}={name!r}: supported are {', '.join(sorted(_ACTIVATIONS))}"
        )
    return None if name == "linear" else _ACTIVATIONS[name]()


def _layer_norm(layer: KerasLayer, width: int | None) -> tuple[nn.LayerNorm, int]:
    c = layer.config
    axis = c.get("axis", -1)
    axes = axis if isinstance(axis, list) else [axis]
    rank = len((c.get("build_config") or {}).get("input_shape") or [None, None, None])
    if c.get("rms_scaling"):
        raise UnsupportedModelError(f"{layer.label} has rms_scaling=True: not supported")
    if len(axes) != 1 or axes[0] not in (-1, rank - 1, 2):
        raise UnsupportedModelError(f"{layer.label} normalizes over axis {axis}: only the last axis is supported")
    scale, center = bool(c.get("scale", True)), bool(c.get("center", True))
    w = list(layer.weights)
    if len(w) != int(scale) + int(center):
        raise WeightsError(f"{layer.label}: expected {int(scale) + int(center)} weight arrays, found {len(w)}")
    n = int(w[0].shape[0]) if w else width
    if n is None:
        raise UnsupportedModelError(f"{layer.label}: its width cannot be told (no weights and no input shape)")
    gamma = w.pop(0) if scale else np.ones(n, np.float32)
    beta = w.pop(0) if center else np.zeros(n, np.float32)
    norm = nn.LayerNorm(n, eps=float(c.get("epsilon", 1e-3)))
    _assign(norm, {"weight": gamma, "bias": beta})
    return norm, n


def _shape(layer: KerasLayer, what: str, a: np.ndarray, expected: tuple[int, ...]) -> None:
    if tuple(a.shape) != expected:
        raise WeightsError(f"{layer.label}: {what} has shape {list(a.shape)}, expected {list(expected)}")


def _assign(module: nn.Module, params: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        for name, value in params.items():
            getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


# ---- export ----------------------------------------------------------------------------------------------


def load_keras(path: str | Path) -> KerasModel:
    """Read a Keras model file and rebuild it as a torch `KerasModel`."""
    return build_torch(read_keras(path))


def export_keras(
    source: str | Path,
    path: str | Path,
    *,
    features: Sequence[str],
    **options: Any,
) -> ExportReport:
    """Export the Keras model in `source` (`.keras` or legacy `.h5`) as a step model at `path`.

    `options` are `export_torch`'s keyword arguments (output, output_names, scaling, calibrate,
    quantize, name, version, tolerance, ...), except `batch_first` (Keras models are batch-first).
    """
    kf = read_keras(source)
    model = build_torch(kf)
    features = list(features)
    if len(features) != model.n_features:
        raise FeatureMismatchError(
            f"the Keras model '{kf.model_name}' takes {model.n_features} features per step, but "
            f"{len(features)} were named ({', '.join(features)})"
        )
    provenance = {
        "source": f"keras {kf.model_class} '{kf.model_name}'",
        "keras_file": kf.path.name,
        "keras_format": kf.format,
        **({"keras_version": kf.keras_version} if kf.keras_version else {}),
        **dict(options.pop("provenance", None) or {}),
    }
    options.pop("batch_first", None)
    options.setdefault("name", kf.path.stem)
    return export_torch(model, path, features=features, batch_first=True, provenance=provenance, **options)
