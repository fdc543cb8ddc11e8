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

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .api import ExportReport, export_torch
from .errors import FeatureMismatchError, UnsupportedModelError, WeightsError
from .keras_file import KerasFile, KerasLayer, read_keras

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
        if t == "InputLayer" or t in _IDENTITY:
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
        else:
            layer_mods, width = _stateless(layer, width)
            mods += layer_mods
    if not any(isinstance(m, nn.RNNBase) for _, m in mods):
        raise UnsupportedModelError(f"Keras model '{kf.model_name}' has no LSTM or GRU layer: nothing carries state")
    first = next(layer for layer in kf.layers if layer.type in ("LSTM", "GRU"))
    n_features = kf.n_features if kf.n_features is not None else int(first.weights[0].shape[0])
    return KerasModel(mods, n_features).eval()


def _stateless(layer: KerasLayer, width: int | None) -> tuple[list[tuple[str, nn.Module]], int | None]:
    """The torch modules of a layer without state (Dense, TimeDistributed(Dense), Activation,
    LayerNormalization), and the width after it; refuses every other layer."""
    t = layer.type
    mods: list[tuple[str, nn.Module]] = []
    if t == "Dense" or (t == "TimeDistributed" and layer.inner is not None and layer.inner.type == "Dense"):
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
    return mods, width


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
