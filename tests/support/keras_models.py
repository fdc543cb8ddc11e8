"""Keras test models, built and saved by keras 3 on the torch backend (installed for tests only).

Import this module only after `pytest.importorskip("keras")`: it selects the torch backend before
keras is imported. Weights are random but seeded and made larger than Keras's initializers give
(biases included), so that a wrong gate order or a dropped bias shows up in parity.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"

import keras
import numpy as np

L = keras.layers
F = 3  # features


def _randomize(model: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def lstm_dense() -> Any:
    return keras.Sequential([keras.Input((None, F)), L.LSTM(12), L.Dense(F)], name="lstm_dense")


def stacked_lstm() -> Any:
    return keras.Sequential(
        [keras.Input((None, F)), L.LSTM(10, return_sequences=True), L.LSTM(8), L.Dense(F)], name="stacked"
    )


def gru_time_distributed() -> Any:
    return keras.Sequential(
        [
            keras.Input((None, F)),
            L.GRU(10, return_sequences=True),
            L.TimeDistributed(L.Dense(6, activation="relu")),
            L.TimeDistributed(L.Dense(F)),
        ],
        name="gru_td",
    )


def norm_dropout() -> Any:
    return keras.Sequential(
        [
            keras.Input((None, F)),
            L.LSTM(12, return_sequences=True),
            L.Dropout(0.2),
            L.LayerNormalization(),
            L.GRU(8, return_sequences=True),
            L.Dense(8, activation="tanh"),
            L.Dense(F),
        ],
        name="norm_dropout",
    )


def functional() -> Any:
    x = keras.Input((None, F), name="readings")
    h = L.LSTM(10, return_sequences=True, name="encoder")(x)
    h = L.LayerNormalization(name="norm")(h)
    h = L.GRU(6, name="summary")(h)
    h = L.Dropout(0.1)(h)
    y = L.Dense(1, activation="sigmoid", name="score")(h)
    return keras.Model(x, y, name="functional_score")


MODELS: dict[str, Callable[[], Any]] = {
    "lstm_dense": lstm_dense,
    "stacked_lstm": stacked_lstm,
    "gru_time_distributed": gru_time_distributed,
    "norm_dropout": norm_dropout,
    "functional": functional,
}


def refused() -> dict[str, Any]:
    """Models the exporter must refuse, by what is wrong with them."""
    x = keras.Input((None, F))
    merged = L.Add(name="sum")([L.LSTM(4, return_sequences=True)(x), L.Dense(4)(x)])
    return {
        "branching": keras.Model(x, L.Dense(F)(merged)),
        "gru_reset_before": keras.Sequential(
            [keras.Input((None, F)), L.GRU(4, reset_after=False, name="old_gru"), L.Dense(F)]
        ),
        "bidirectional": keras.Sequential(
            [keras.Input((None, F)), L.Bidirectional(L.LSTM(4), name="both_ways"), L.Dense(F)]
        ),
        "conv1d": keras.Sequential([keras.Input((None, F)), L.Conv1D(4, 3, name="conv"), L.LSTM(4), L.Dense(F)]),
        "stateful": keras.Sequential(
            [keras.Input((None, F), batch_size=1), L.LSTM(4, stateful=True, name="kept"), L.Dense(F)]
        ),
        "go_backwards": keras.Sequential(
            [keras.Input((None, F)), L.LSTM(4, go_backwards=True, name="backwards"), L.Dense(F)]
        ),
        "relu_lstm": keras.Sequential(
            [keras.Input((None, F)), L.LSTM(4, activation="relu", name="relu_cell"), L.Dense(F)]
        ),
    }


def build(name: str, seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    return _randomize(MODELS[name](), seed)


def save(model: Any, directory: Path, stem: str) -> tuple[Path, Path]:
    """The model as `.keras` and as legacy `.h5`."""
    k, h = directory / f"{stem}.keras", directory / f"{stem}.h5"
    model.save(k)
    model.save(h)
    return k, h


def sequences(steps: int = 60, batch: int = 3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[None, :, None]
    x = np.sin(t / rng.uniform(4, 15, (batch, 1, F))) + rng.normal(0, 0.3, (batch, steps, F))
    return x.astype(np.float32)


def predict_every_step(model: Any, x: np.ndarray) -> np.ndarray:
    """Keras's own outputs for every step `[B, T, O]`: one predict for a sequence model, one per prefix
    for a model returning its last step."""
    full = np.asarray(model.predict(x, verbose=0))
    if full.ndim == 3:
        return full
    return np.stack([np.asarray(model.predict(x[:, : t + 1], verbose=0)) for t in range(x.shape[1])], axis=1)
