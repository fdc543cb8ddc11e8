"""Reading Keras model files without TensorFlow or keras: json and h5py only (used by keras.py).

A `.keras` file is a zip of `config.json` + `model.weights.h5`; a legacy `.h5` has a `model_config`
attribute and a `model_weights` group. Both become a `KerasFile`: the model's layers in order, each with
its config and its weights as numpy arrays. Anything this cannot read is a one-line error.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import UnsupportedModelError, WeightsError


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
