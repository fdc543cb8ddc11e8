"""Parity: the exported step model, stepped one reading at a time, must reproduce the source model.

The source runs its own `forward` over whole sequences from zero state, the way it was trained and
evaluated; the ONNX model runs in onnxruntime step by step, carrying its state. This is the check that
refuses forwards which mix time steps (attention over the sequence, reversal, pooling): nothing is
guessed from the code, a difference is measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from .errors import ParityError
from .stateful import StepWrapper, first_tensor

DEFAULT_TOLERANCE = 1e-4
# Models that only return their last step need one source forward per compared step (a prefix):
# compare every early step (where state effects are largest) and a spread of later ones.
_PREFIX_DENSE = 16
_PREFIX_SPREAD = 32


@dataclass(frozen=True)
class ParityReport:
    max_abs_error: float
    tolerance: float
    sequences: int
    steps: int  # length of the longest sequence
    compared: int  # number of (sequence, step) outputs compared
    mode: str  # "every_step": the forward returns all steps; "prefix": it returns the last step only
    data: str  # "generated", "given" (windows of the calibration/parity data) or both

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def generate_sequences(n_features: int, *, sequences: int = 4, steps: int = 300, seed: int = 0) -> np.ndarray:
    """Plausible scaled inputs `[S, T, F]`: smooth AR(1) wander plus oscillations, roughly unit variance."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[None, :, None]
    period = rng.uniform(20, 120, size=(sequences, 1, n_features))
    phase = rng.uniform(0, 2 * np.pi, size=(sequences, 1, n_features))
    wave = np.sin(2 * np.pi * t / period + phase)
    ar = np.zeros((sequences, steps, n_features))
    noise = rng.normal(0, 0.3, size=ar.shape)
    for i in range(1, steps):
        ar[:, i] = 0.9 * ar[:, i - 1] + noise[:, i]
    return (wave + ar).astype(np.float32)


def step_session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def run_steps(session: ort.InferenceSession, seqs: np.ndarray) -> np.ndarray:
    """Step a session over `[S, T, F]` (all S sequences as one batch), from zero state → `[S, T, O]`."""
    ins = session.get_inputs()
    x_name, state_ins = ins[0].name, ins[1:]
    s_count = seqs.shape[0]
    states = [np.zeros((s_count, *i.shape[1:]), np.float32) for i in state_ins]
    ys = []
    for t in range(seqs.shape[1]):
        y, *states = session.run(None, {x_name: seqs[:, t], **{i.name: s for i, s in zip(state_ins, states)}})
        ys.append(y)
    return np.stack(ys, axis=1)


def source_outputs(wrapper: StepWrapper, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The source model's own outputs: `(steps compared, outputs [S, K, O], mode)`."""
    model = wrapper.model
    steps = seqs.shape[1]

    def forward(x: np.ndarray) -> torch.Tensor:
        xt = torch.from_numpy(x)
        if not wrapper.batch_first:
            xt = xt.transpose(0, 1)
        with torch.no_grad():
            return first_tensor(model(xt))

    full = forward(seqs)
    if full.dim() == 3:
        out = full if wrapper.batch_first else full.transpose(0, 1)
        return np.arange(steps), out.numpy(), "every_step"
    dense = np.arange(min(_PREFIX_DENSE, steps))
    spread = np.linspace(0, steps - 1, _PREFIX_SPREAD).round().astype(int)
    idx = np.unique(np.concatenate([dense, spread]))
    outs = [full.numpy() if t == steps - 1 else forward(seqs[:, : t + 1]).numpy() for t in idx]
    return idx, np.stack(outs, axis=1), "prefix"


def check_parity(
    wrapper: StepWrapper,
    model_bytes: bytes,
    seqs: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    data: str = "generated",
) -> ParityReport:
    """Compare source and step model; raise ParityError beyond `tolerance`."""
    seqs = np.ascontiguousarray(seqs, dtype=np.float32)
    idx, expected, mode = source_outputs(wrapper, seqs)
    got = run_steps(step_session(model_bytes), seqs)[:, idx]
    if got.shape != expected.shape:
        raise ParityError(
            f"step model outputs {list(got.shape)} but the source model gives {list(expected.shape)}", float("inf")
        )
    err = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    max_err = float(np.nanmax(err)) if np.isfinite(err).all() else float("inf")
    report = ParityReport(max_err, tolerance, seqs.shape[0], seqs.shape[1], int(idx.size * seqs.shape[0]), mode, data)
    if not max_err <= tolerance:
        s, k, o = np.unravel_index(int(np.nanargmax(np.nan_to_num(err, nan=np.inf))), err.shape)
        raise ParityError(
            f"parity check failed: the step model differs from the source model by {max_err:.3g} "
            f"(tolerance {tolerance:g}; first worst at sequence {s}, step {int(idx[k])}, output {o}). "
            "The forward probably mixes time steps (attention, pooling, reversal) or sets its own "
            "initial state, which a streaming step model cannot reproduce",
            max_err,
        )
    return report


def merge(a: ParityReport, b: ParityReport) -> ParityReport:
    """One report over two sets of sequences (e.g. generated and given): the worst error, all counts."""
    return ParityReport(
        max(a.max_abs_error, b.max_abs_error),
        a.tolerance,
        a.sequences + b.sequences,
        max(a.steps, b.steps),
        a.compared + b.compared,
        a.mode,
        f"{a.data}+{b.data}",
    )
