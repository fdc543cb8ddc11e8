"""Scoring: the channels (`channels/`, one module each, registered in `channels.REGISTRY`), the shared
statistics (`stats.py`), the settings (`config.py`) and their combination (`score.py`). The channel
table and how to add a channel: docs/architecture.md."""

from .channel import BaseChannel, Batch, Channel, ChannelType, Scores
from .config import ScoringConfig
from .score import Scored, Scorer

__all__ = ["BaseChannel", "Batch", "Channel", "ChannelType", "Scored", "Scorer", "Scores", "ScoringConfig"]
