"""The shape every scoring channel has (docs/architecture.md, "Scoring channels").

A channel is one module under `scoring/channels/` with one class that

- is built from the model's metadata and the scoring settings (`build`, None when the channel does not
  apply to the model: the bias channel needs a forecast model);
- declares its per-stream state as `columns` of the state table, named `<name>.<what>` (they are
  gathered, scattered, checkpointed, spilled and restored with the rest of the stream's row);
- scores one round of streams at once (`update(batch)` → `Scores`): its flags, the per-reading values it
  publishes as `Result` fields (keyword = field name), and named statistics later stages use;
- tells its threshold as it stands (`threshold`) and its entries for `inspect` (`describe`);
- after a model reload that keeps the streams' rows, resets what the new model measures differently
  (`adopt`);
- documents itself in its class docstring (its first line is its row of the channel table).

The channels of a model are `scoring.channels.REGISTRY`, in the order their fields are listed; adding a
channel is its module plus one line there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from ..contract import ModelMeta
from ..npfast import count_nonzero
from ..state import Column

if TYPE_CHECKING:
    from .config import ScoringConfig


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3x more, once per round
class Batch:
    """One round of streams (one reading each) as every channel sees it; arrays have B rows."""

    cols: dict[str, np.ndarray]  # the streams' state columns (gathered; a channel updates its own in place)
    values: np.ndarray  # [B, F] the readings, feature units
    u: np.ndarray  # [B, F] the readings, scaled by the model's scaling
    y: np.ndarray  # the model's output for them
    predicted: np.ndarray | None  # forecast models: the forecasts made at each stream's previous reading
    steps: np.ndarray  # readings each stream has seen before this one
    warming: np.ndarray  # the model's state is still warming up (no forecast score flags)
    ready: np.ndarray  # the stream's baseline is learned (steps >= scoring.baseline)
    restart: np.ndarray  # the previous reading is too old to predict this one (a gap): re-anchor only
    gap: np.ndarray  # seconds since each stream's previous reading (+inf for its first)
    ts: np.ndarray  # each reading's event time, seconds since the epoch (the surprise channel's time of day)
    # The signals of the channels before this one in REGISTRY this round (the surprise channel reads the
    # deviation channel's distance to the known normal states).
    signals: dict[str, np.ndarray] = field(default_factory=dict)


# A [B] statistic computed only when called (the deviation channel's likelihood: read by the alarm's quiet
# test only, which a quiet round never reaches).
Lazy = Callable[[], np.ndarray]


@dataclass(slots=True)
class Scores:
    """One channel's output for a round."""

    flags: np.ndarray  # [B] bool: the channel calls the reading an anomaly
    # Result keyword → one value per reading (None: not published for that reading).
    fields: dict[str, list[Any]] = field(default_factory=dict)
    # Named [B] statistics for later stages (the alarm takes "score" and "likelihood").
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    # Named statistics computed when called, for later stages ("likelihood", in place of the signal).
    lazy: dict[str, Lazy] = field(default_factory=dict)


def published(ready: np.ndarray, values: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    """Result fields from [B] arrays: each value where `ready`, None where not. While every stream of the
    round is ready (the steady state) this is one tolist() per field, not a Python loop over readings."""
    if count_nonzero(ready) == len(ready):
        return {k: v.tolist() for k, v in values.items()}
    flags = ready.tolist()
    return {k: [x if r else None for x, r in zip(v.tolist(), flags)] for k, v in values.items()}


class Channel(Protocol):
    """A scoring channel. Stateless apart from the columns it is given (one instance per model)."""

    name: ClassVar[str]  # also the prefix of its column names
    fields: ClassVar[tuple[str, ...]]  # the Result fields its `update` fills, in payload order
    columns: Mapping[str, Column]  # its per-stream state columns

    @classmethod
    def build(cls, meta: ModelMeta, config: ScoringConfig) -> Channel | None:
        """The channel for this model, or None when it does not apply."""
        ...

    def update(self, batch: Batch) -> Scores:
        """Score a round: updates the channel's columns in `batch.cols` in place. A threshold a reading
        is compared with is the one that stood before the reading (causal)."""
        ...

    def threshold(self, cols: Mapping[str, np.ndarray]) -> np.ndarray | float | None:
        """The threshold the channel's value is compared with, per stream, as it stands (None: none)."""
        ...

    def describe(self, cols: Mapping[str, np.ndarray], ready: bool) -> dict[str, object]:
        """`inspect`'s entries for one stream's row (`cols`: its columns, scalars per stream)."""
        ...

    def adopt(self, previous: Channel, columns: dict[str, np.ndarray]) -> None:
        """A model reload keeps every stream's row (`columns`: the whole table's): reset what the new
        model measures differently from `previous`, the old model's instance of this channel."""
        ...


class BaseChannel:
    """Defaults for a channel without state, threshold, `inspect` entries or reload fix-ups."""

    columns: Mapping[str, Column] = {}

    def threshold(self, cols: Mapping[str, np.ndarray]) -> np.ndarray | float | None:
        return None

    def describe(self, cols: Mapping[str, np.ndarray], ready: bool) -> dict[str, object]:
        return {}

    def adopt(self, previous: Channel, columns: dict[str, np.ndarray]) -> None:
        return None


class ChannelType(Protocol):
    """What the registry holds: a channel class (its `build` makes the model's instance)."""

    name: str
    fields: tuple[str, ...]

    def build(self, meta: ModelMeta, config: ScoringConfig) -> Channel | None: ...
