"""The scoring channels, one module each (docs/architecture.md has the table and how to add one).

`REGISTRY` is every channel a model is scored by, in the order their fields are filled; adding a channel
is its module plus one line here.
"""

from __future__ import annotations

from ..channel import ChannelType
from .bias import Bias
from .deviation import Deviation
from .forecast import ForecastScore
from .stuck import Stuck

REGISTRY: list[ChannelType] = [
    ForecastScore,
    Deviation,
    Bias,
    Stuck,
]
