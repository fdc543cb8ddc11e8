"""edge-lstm: streaming per-stream LSTM inference over MQTT.

The public API is what this module exports; everything else is an implementation detail.
"""

from .contract import ModelFormatError, ModelMeta
from .engine import Engine, Outcome
from .model import OnnxStepModel, StepModel, default_model_path, load_model
from .reading import Decoder, Reading, Rejection
from .result import Result, encode
from .score import Scorer

__version__ = "0.1.0"

__all__ = [
    "Decoder",
    "Engine",
    "ModelFormatError",
    "ModelMeta",
    "OnnxStepModel",
    "Outcome",
    "Reading",
    "Rejection",
    "Result",
    "Scorer",
    "StepModel",
    "__version__",
    "default_model_path",
    "encode",
    "load_model",
]
