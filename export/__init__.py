"""edge-lstm-export: turn a PyTorch LSTM/GRU model into a verified, calibrated ONNX step model.

Installed with the `export` extra (needs torch); the edge daemon never imports this package.
"""

from .api import TOOL_VERSION, ExportReport, export_torch
from .calibrate import CalibrationReport
from .errors import (
    DataError,
    ExportError,
    FactoryError,
    FeatureMismatchError,
    ParityError,
    QuantizationError,
    UnsupportedModelError,
    WeightsError,
)
from .parity import ParityReport
from .quantize import QuantReport

__version__ = TOOL_VERSION

__all__ = [
    "CalibrationReport",
    "DataError",
    "ExportError",
    "ExportReport",
    "FactoryError",
    "FeatureMismatchError",
    "ParityError",
    "ParityReport",
    "QuantReport",
    "QuantizationError",
    "UnsupportedModelError",
    "WeightsError",
    "__version__",
    "export_torch",
]
