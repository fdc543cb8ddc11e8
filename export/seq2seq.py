"""Encoder–decoder (seq2seq) models: every reading updates the encoder state, the decoder rolls out K steps.

The protocol a user's model follows (docs/export.md, "Multi-step forecasts"):

- `model.encoder` is an `nn.LSTM`, `nn.GRU` or `nn.RNN` that reads the (scaled) history;
- `model.decode(last, state, horizon)` returns the forecast `[batch, horizon, outputs]` from the last
  reading `last [batch, features]` and the encoder's final state, exactly as the encoder returns it
  (`(h, c)` for an LSTM, `h` for a GRU/RNN; `[num_layers, batch, hidden]`).

The source model's own forecast for a history `x` is then `decode(x[:, -1], encoder(x)[1], K)`. The
step model carries only the encoder's state; the decoder runs from scratch at every step and its K-step
rollout is unrolled inside the ONNX graph at trace time. Its output is flattened to `[batch, K * outputs]`
(step-major: column `k * outputs + j` is output j at step k+1), with `output.horizon = K` in the metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import FeatureMismatchError, ParityError, UnsupportedModelError
from .parity import _PREFIX_DENSE, _PREFIX_SPREAD, DEFAULT_TOLERANCE, ParityReport, run_steps, step_session
from .stateful import Recurrent, StateSpec, find_recurrent

__all__ = ["Seq2SeqStep", "check_seq2seq_parity", "is_seq2seq", "make_seq2seq_step", "source_forecast"]


def is_seq2seq(model: nn.Module) -> bool:
    return callable(getattr(model, "decode", None)) and isinstance(getattr(model, "encoder", None), nn.Module)


class Seq2SeqStep(nn.Module):
    """`forward(x[B,F], *states[B,L,H]) -> (forecast[B, K*O], *new_states[B,L,H])` around the user's model."""

    def __init__(self, model: nn.Module, encoder: Recurrent, horizon: int) -> None:
        super().__init__()
        self.model = model
        self.encoder = encoder
        self.horizon = horizon
        self.batch_first = encoder.batch_first
        self.specs = [StateSpec("encoder", part, (encoder.num_layers, encoder.hidden)) for part in encoder.parts]

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seq = x.unsqueeze(1 if self.batch_first else 0)
        torch_states = [s.transpose(0, 1).contiguous() for s in states]
        hx: Any = (torch_states[0], torch_states[1]) if len(torch_states) == 2 else torch_states[0]
        _, state = self.encoder.module(seq, hx)
        y = _forecast(self.model, x, state, self.horizon)
        new = list(state) if isinstance(state, tuple) else [state]
        return (y.reshape(y.shape[0], -1), *[s.transpose(0, 1) for s in new])

    def zero_states(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, *s.shape) for s in self.specs]


def _forecast(model: nn.Module, last: torch.Tensor, state: Any, horizon: int) -> torch.Tensor:
    decode: Any = model.decode  # the user's method (nn.Module's __getattr__ types it as a tensor)
    y = decode(last, state, horizon)
    if not isinstance(y, torch.Tensor) or y.dim() != 3 or y.shape[1] != horizon:
        shape = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UnsupportedModelError(
            f"decode(last, state, {horizon}) must return [batch, {horizon}, outputs], got {shape}"
        )
    return y


def make_seq2seq_step(model: nn.Module, n_features: int, horizon: int) -> Seq2SeqStep:
    """Check the protocol, build the step wrapper and run it once (batch 2)."""
    if not is_seq2seq(model):
        raise UnsupportedModelError(
            f"horizon={horizon} needs an encoder-decoder model: an `encoder` (nn.LSTM/GRU/RNN) attribute and "
            f"a `decode(last, state, horizon)` method; {type(model).__name__} has "
            f"{'no encoder' if not isinstance(getattr(model, 'encoder', None), nn.Module) else 'no decode()'}"
        )
    if horizon < 1:
        raise UnsupportedModelError(f"horizon must be >= 1, got {horizon}")
    model.eval()
    enc = model.encoder
    if not isinstance(enc, (nn.LSTM, nn.GRU, nn.RNN)):
        raise UnsupportedModelError(f"model.encoder must be an nn.LSTM, nn.GRU or nn.RNN, got {type(enc).__name__}")
    (encoder,) = find_recurrent(enc)
    wrapper = Seq2SeqStep(model, encoder, horizon).eval()
    try:
        with torch.no_grad():
            wrapper(torch.zeros(2, n_features), *wrapper.zero_states(2))
    except (RuntimeError, ValueError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FeatureMismatchError(
            f"the model does not accept {n_features} features (encoder input_size={enc.input_size}): {first}"
        ) from None
    return wrapper


def source_forecast(wrapper: Seq2SeqStep, history: np.ndarray) -> np.ndarray:
    """The source model's own K-step forecast `[S, K*O]` after the history `[S, T, F]` (from zero state)."""
    x = torch.from_numpy(np.ascontiguousarray(history, np.float32))
    seq = x if wrapper.batch_first else x.transpose(0, 1)
    with torch.no_grad():
        _, state = wrapper.encoder.module(seq)
        y = _forecast(wrapper.model, x[:, -1], state, wrapper.horizon)
    out: np.ndarray = y.reshape(y.shape[0], -1).numpy()
    return out


def check_seq2seq_parity(
    wrapper: Seq2SeqStep,
    model_bytes: bytes,
    seqs: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    data: str = "generated",
) -> ParityReport:
    """The step model's K-step forecast after each compared step vs the source model's own rollout from
    the same history (all K steps, every output); raise ParityError beyond `tolerance`."""
    seqs = np.ascontiguousarray(seqs, dtype=np.float32)
    steps = seqs.shape[1]
    dense = np.arange(min(_PREFIX_DENSE, steps))
    spread = np.linspace(0, steps - 1, _PREFIX_SPREAD).round().astype(int)
    idx = np.unique(np.concatenate([dense, spread]))
    got = run_steps(step_session(model_bytes), seqs)[:, idx]
    expected = np.stack([source_forecast(wrapper, seqs[:, : t + 1]) for t in idx], axis=1)
    if got.shape != expected.shape:
        raise ParityError(
            f"step model outputs {list(got.shape)} but the source model gives {list(expected.shape)}", float("inf")
        )
    err = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    max_err = float(err.max()) if np.isfinite(err).all() else float("inf")
    report = ParityReport(max_err, tolerance, seqs.shape[0], steps, int(idx.size * seqs.shape[0]), "rollout", data)
    if not max_err <= tolerance:
        s, k, col = np.unravel_index(int(np.nanargmax(np.nan_to_num(err, nan=np.inf))), err.shape)
        n_out = err.shape[2] // wrapper.horizon
        raise ParityError(
            f"parity check failed: the step model's forecast differs from the source model's rollout by "
            f"{max_err:.3g} (tolerance {tolerance:g}; first worst at sequence {s}, step {int(idx[k])}, "
            f"horizon step {col // n_out + 1}, output {col % n_out}). decode() must depend only on its "
            "arguments (last reading, encoder state)",
            max_err,
        )
    return report
