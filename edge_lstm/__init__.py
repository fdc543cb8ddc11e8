"""edge-lstm: streaming per-stream LSTM inference over MQTT.

The public API is what this module exports; everything else is an implementation detail. Names are
loaded on first use (PEP 562), so `import edge_lstm` and `edge-lstm --version` load neither onnxruntime
nor paho.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("edge-lstm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "Daemon": "service.daemon",
    "Decoder": "reading",
    "Engine": "engine",
    "ModelFormatError": "contract",
    "ModelMeta": "contract",
    "OnnxStepModel": "onnx_model",
    "Outcome": "engine",
    "Pipeline": "pipeline",
    "Reading": "reading",
    "Rejection": "reading",
    "Result": "result",
    "Scorer": "scoring",
    "Settings": "service.config",
    "StepModel": "ports",
    "default_model_path": "onnx_model",
    "encode": "result",
    "load_model": "onnx_model",
    "load_settings": "service.config",
}

__all__ = [
    "Daemon",
    "Decoder",
    "Engine",
    "ModelFormatError",
    "ModelMeta",
    "OnnxStepModel",
    "Outcome",
    "Pipeline",
    "Reading",
    "Rejection",
    "Result",
    "Scorer",
    "Settings",
    "StepModel",
    "__version__",
    "default_model_path",
    "encode",
    "load_model",
    "load_settings",
]

if TYPE_CHECKING:
    from .contract import ModelFormatError, ModelMeta
    from .engine import Engine, Outcome
    from .onnx_model import OnnxStepModel, default_model_path, load_model
    from .pipeline import Pipeline
    from .ports import StepModel
    from .reading import Decoder, Reading, Rejection
    from .result import Result, encode
    from .scoring import Scorer
    from .service.config import Settings, load_settings
    from .service.daemon import Daemon


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_lstm' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
