"""The exporter's errors. Each refusal has its own type so callers (and tests) can tell them apart;
every message names the module, tensor, column or bound at fault."""

from __future__ import annotations


class ExportError(Exception):
    """Base class: the model or the data cannot be exported as asked."""


class UnsupportedModelError(ExportError):
    """A recurrent module (or the way it is used) cannot become a step model."""


class ParityError(ExportError):
    """The exported step model does not reproduce the source model within tolerance."""

    def __init__(self, message: str, max_abs_error: float) -> None:
        super().__init__(message)
        self.max_abs_error = max_abs_error


class QuantizationError(ExportError):
    """Quantization did not happen, or made the model too inaccurate."""


class FeatureMismatchError(ExportError):
    """The number of features given does not match what the model accepts."""


class DataError(ExportError):
    """Input data (a CSV or an array) is missing columns, non-numeric, or too short."""


class FactoryError(ExportError):
    """The `--factory` path does not resolve to a callable that builds an nn.Module."""


class WeightsError(ExportError):
    """The weights file cannot be read, or its state_dict does not match the model."""
