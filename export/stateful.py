"""Make the recurrent state explicit, without touching the user's code.

A user's `forward(x)` runs a whole sequence from zero state. To serve it one reading at a time we run
that same forward on a length-1 sequence while every recurrent module is temporarily patched: the
patch ignores whatever initial state the user passes (normally none, i.e. zeros), feeds the state
carried in from the previous step instead, and captures the module's final state as a new output.
The rest of the forward (heads, norms, dropout, slicing) runs unchanged, which is what makes arbitrary
user models work. Whether the forward really is step-wise (no mixing of time steps) is not guessed
here: the parity check proves it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import FeatureMismatchError, UnsupportedModelError

_RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)
# Cells are stepped by a Python loop in the user's forward; that loop owns the state, we cannot.
_CELLS = (nn.LSTMCell, nn.GRUCell, nn.RNNCell)


@dataclass(frozen=True)
class Recurrent:
    """One recurrent module of the user's model and the state pairs it contributes."""

    path: str  # dotted module path inside the user's model ("" for the model itself)
    module: nn.RNNBase
    num_layers: int
    hidden: int
    batch_first: bool

    @property
    def parts(self) -> tuple[str, ...]:
        return ("h", "c") if isinstance(self.module, nn.LSTM) else ("h",)

    @property
    def label(self) -> str:
        return self.path or "root"


@dataclass(frozen=True)
class StateSpec:
    """One state tensor of the step model: per stream `[num_layers, hidden]`, batch-first in ONNX."""

    module: str
    part: str  # "h" or "c"
    shape: tuple[int, int]

    @property
    def input_name(self) -> str:
        return f"state.{self.module}.{self.part}.in"

    @property
    def output_name(self) -> str:
        return f"state.{self.module}.{self.part}.out"


def find_recurrent(model: nn.Module) -> list[Recurrent]:
    """Every nn.LSTM / nn.GRU / nn.RNN anywhere in `model`, in registration order; refuse what cannot stream."""
    found = []
    for path, m in model.named_modules():
        where = f"module '{path or type(model).__name__}' ({type(m).__name__})"
        if isinstance(m, _CELLS):
            raise UnsupportedModelError(
                f"{where}: recurrent cells are stepped by the model's own Python loop, so their state "
                "cannot be made explicit; use nn.LSTM/nn.GRU over the sequence instead"
            )
        if not isinstance(m, _RECURRENT):
            continue
        if m.bidirectional:
            raise UnsupportedModelError(
                f"{where} is bidirectional: its backward direction needs future readings, "
                "which a streaming step model never has"
            )
        if getattr(m, "proj_size", 0) > 0:
            raise UnsupportedModelError(
                f"{where} has proj_size={m.proj_size}: LSTM projections are not supported by the ONNX "
                "LSTM operator onnxruntime runs"
            )
        found.append(Recurrent(path, m, m.num_layers, m.hidden_size, m.batch_first))
    if not found:
        raise UnsupportedModelError(
            f"{type(model).__name__} contains no nn.LSTM, nn.GRU or nn.RNN: nothing carries state"
        )
    return found


class StepWrapper(nn.Module):
    """`forward(x[B,F], *states[B,L,H]) -> (y[B,O], *new_states[B,L,H])` around the user's model."""

    def __init__(self, model: nn.Module, recurrent: list[Recurrent], *, batch_first: bool) -> None:
        super().__init__()
        self.model = model
        self.recurrent = recurrent
        self.batch_first = batch_first  # layout of the user's forward input and per-step output
        self.specs = [StateSpec(r.label, part, (r.num_layers, r.hidden)) for r in recurrent for part in r.parts]
        self.calls: dict[str, int] = {}

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seq = x.unsqueeze(1 if self.batch_first else 0)  # a sequence of one step
        feeds: dict[str, list[torch.Tensor]] = {}
        i = 0
        for r in self.recurrent:
            # ONNX states are batch-first; torch wants (layers, batch, hidden) whatever batch_first says.
            feeds[r.label] = [s.transpose(0, 1).contiguous() for s in states[i : i + len(r.parts)]]
            i += len(r.parts)
        captured: dict[str, list[torch.Tensor]] = {}
        self.calls = {r.label: 0 for r in self.recurrent}
        with _patched(self.recurrent, feeds, captured, self.calls):
            out = self.model(seq)
        y = last_step(first_tensor(out), self.batch_first, steps=1)
        new_states = []
        for r in self.recurrent:
            if r.label not in captured:
                raise UnsupportedModelError(
                    f"module '{r.label}' ({type(r.module).__name__}) is not called by forward(); "
                    "an unused recurrent module cannot carry state"
                )
            new_states += [s.transpose(0, 1) for s in captured[r.label]]
        return (y, *new_states)

    def zero_states(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, *s.shape) for s in self.specs]


def first_tensor(out: Any) -> torch.Tensor:
    """Models often return `(output, hidden)`: the output is the first tensor."""
    while isinstance(out, (tuple, list)):
        if not out:
            raise UnsupportedModelError("forward() returned an empty tuple")
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise UnsupportedModelError(
            f"forward() must return a tensor (or a tuple starting with one), got {type(out).__name__}"
        )
    return out


def last_step(y: torch.Tensor, batch_first: bool, *, steps: int) -> torch.Tensor:
    """`[B,O]` stays; an every-step output `[B,T,O]` (or `[T,B,O]`) gives its last step."""
    if y.dim() == 2:
        return y
    if y.dim() == 3:
        t_axis = 1 if batch_first else 0
        if y.shape[t_axis] != steps:
            raise UnsupportedModelError(
                f"forward() returned shape {list(y.shape)}; expected {steps} step(s) on axis {t_axis}"
            )
        return y[:, -1] if batch_first else y[-1]
    raise UnsupportedModelError(
        f"forward() returned shape {list(y.shape)}: expected [batch, outputs] or every step [batch, time, outputs]"
    )


@contextlib.contextmanager
def _patched(
    recurrent: list[Recurrent],
    feeds: dict[str, list[torch.Tensor]],
    captured: dict[str, list[torch.Tensor]],
    calls: dict[str, int],
) -> Iterator[None]:
    """Temporarily replace each recurrent module's forward (instance attribute, so tracing sees it)."""
    try:
        for r in recurrent:
            r.module.forward = _stateful_forward(r, feeds[r.label], captured, calls)
        yield
    finally:
        for r in recurrent:
            r.module.__dict__.pop("forward", None)


def _stateful_forward(
    r: Recurrent,
    state: list[torch.Tensor],
    captured: dict[str, list[torch.Tensor]],
    calls: dict[str, int],
) -> Callable[..., Any]:
    cls_forward = type(r.module).forward

    def forward(input: torch.Tensor, hx: Any = None) -> Any:
        calls[r.label] += 1
        if calls[r.label] > 1:
            # A module reused within one forward has one state per use; which one to carry is ambiguous.
            raise UnsupportedModelError(
                f"module '{r.label}' ({type(r.module).__name__}) is called more than once per forward(); "
                "each recurrent module must run exactly once over the sequence"
            )
        if not isinstance(input, torch.Tensor) or input.dim() != 3:
            raise UnsupportedModelError(
                f"module '{r.label}' got {type(input).__name__} input; only batched 3-d tensors "
                "(no PackedSequence, no unbatched input) can be streamed"
            )
        # The user's hx (normally None = zeros) is replaced by the carried state: at a stream's first
        # step the carried state is zero, so this is the same thing; a learned non-zero h0 would show
        # up as a parity failure.
        injected = (state[0], state[1]) if len(state) == 2 else state[0]
        output, h_n = cls_forward(r.module, input, injected)
        captured[r.label] = list(h_n) if isinstance(h_n, tuple) else [h_n]
        return output, h_n

    return forward


def make_step(model: nn.Module, n_features: int, *, batch_first: bool | None = None) -> StepWrapper:
    """Build the step wrapper and run it once (batch 2) to check the model streams at all.

    `batch_first` is the layout of the user's forward input; by default that of the first recurrent
    module, which is how nearly every model is written.
    """
    model.eval()  # dropout off: a step model is for inference
    recurrent = find_recurrent(model)
    if batch_first is None:
        batch_first = recurrent[0].batch_first
    wrapper = StepWrapper(model, recurrent, batch_first=batch_first).eval()
    try:
        with torch.no_grad():
            wrapper(torch.zeros(2, n_features), *wrapper.zero_states(2))
    except (RuntimeError, ValueError, IndexError) as e:
        # A wrong feature count surfaces as a shape error somewhere in the user's forward.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FeatureMismatchError(
            f"the model does not accept {n_features} features ({len(recurrent)} recurrent module(s), "
            f"first '{recurrent[0].label}' has input_size={recurrent[0].module.input_size}): {first}"
        ) from None
    return wrapper
