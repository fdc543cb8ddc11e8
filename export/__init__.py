"""edge-lstm-export: turn a PyTorch LSTM/GRU model into a verified, calibrated ONNX step model.

Installed with the `export` extra (needs torch); the edge daemon never imports this package. Names are
loaded on first use (PEP 562), so `edge-lstm-export --version` and `--help` work without torch, and a
command run without the extra says how to install it (cli.py).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("edge-lstm")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "CalibrationReport": "calibrate",
    "DataError": "errors",
    "ExportError": "errors",
    "ExportReport": "api",
    "FactoryError": "errors",
    "FeatureMismatchError": "errors",
    "ParityError": "errors",
    "ParityReport": "parity",
    "QuantReport": "quantize",
    "QuantizationError": "errors",
    "UnsupportedModelError": "errors",
    "WeightsError": "errors",
    "export_keras": "keras",
    "export_torch": "api",
}

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
    "export_keras",
    "export_torch",
]

if TYPE_CHECKING:
    from .api import ExportReport, export_torch
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
    from .keras import export_keras
    from .parity import ParityReport
    from .quantize import QuantReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_lstm_export' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
