"""The model contract: the `edge_lstm` metadata document of a step model (docs/model-format.md).

Pure data and validation; opening the ONNX file is `model.py`'s job.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 2  # the newest version this edge-lstm understands
# Version 2 adds `output.horizon` (multi-step forecasts); a model without it is written as version 1, so
# that an edge-lstm that only knows version 1 still serves it.
HORIZON_SCHEMA_VERSION = 2
METADATA_KEY = "edge_lstm"


class ModelFormatError(ValueError):
    """A model file does not meet the contract. The message names the tensor or key at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scaling(_Strict):
    offset: list[float]
    scale: list[float]

    @model_validator(mode="after")
    def _positive(self) -> Scaling:
        for i, s in enumerate(self.scale):
            if not (s > 0 and math.isfinite(s)):
                raise ValueError(f"scaling.scale[{i}] must be a finite number > 0, got {s}")
        for i, o in enumerate(self.offset):
            if not math.isfinite(o):
                raise ValueError(f"scaling.offset[{i}] must be finite, got {o}")
        return self


class Output(_Strict):
    kind: Literal["forecast", "score"]
    names: list[str] = Field(min_length=1)
    # Forecast models: steps ahead the output forecasts. None or 1: the next reading only. K > 1: the
    # output tensor is `[batch, K * len(names)]`, step-major (column k*len(names)+j = name j, step k+1).
    horizon: int | None = Field(default=None, ge=1)

    @property
    def steps(self) -> int:
        return self.horizon or 1

    @property
    def columns(self) -> int:
        """Columns of the output tensor."""
        return self.steps * len(self.names)


class StatePair(_Strict):
    input: str
    output: str


class IO(_Strict):
    input: str
    output: str
    state: list[StatePair] = Field(min_length=1)


class State(_Strict):
    mean: list[float]
    cov: list[list[float]]


class Calibration(_Strict):
    residual_mean: list[float] | None = None
    residual_std: list[float] | None = None
    threshold: float = Field(gt=0)
    quantile: float | None = Field(default=None, gt=0, lt=1)
    samples: int | None = Field(default=None, ge=0)
    # Normal operating states seen in the calibration data (windows' mean and covariance, scaled like
    # the model's input): the deviation channel's known normal states (docs/scoring.md). Optional.
    states: list[State] | None = None
    # Forecast models: the calibration data's (1 − risk) quantile of bias / bias_threshold, when it is
    # above 1: every stream's bias threshold is multiplied by it (docs/scoring.md, "Bias"). Optional.
    bias_scale: float | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _std_positive(self) -> Calibration:
        for i, s in enumerate(self.residual_std or []):
            if not (s > 0 and math.isfinite(s)):
                raise ValueError(f"calibration.residual_std[{i}] must be a finite number > 0, got {s}")
        return self


class ModelMeta(_Strict):
    """Validated content of the `edge_lstm` metadata entry."""

    schema_version: int
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    features: list[str] = Field(min_length=1)
    scaling: Scaling
    output: Output
    io: IO
    calibration: Calibration | None = None
    sample_interval_s: float | None = Field(default=None, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ModelMeta:
        _check_features(self)
        _check_output(self)
        _check_calibration(self)
        _check_io(self)
        return self

    @property
    def model_id(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


def _check_features(meta: ModelMeta) -> None:
    """Unique, non-empty feature names, and one scaling offset and scale per feature."""
    n = len(meta.features)
    if len(set(meta.features)) != n:
        raise ValueError(f"features must be unique, got {meta.features}")
    if any(not f for f in meta.features):
        raise ValueError("features must be non-empty names")
    for key in ("offset", "scale"):
        got = len(getattr(meta.scaling, key))
        if got != n:
            raise ValueError(f"scaling.{key} has {got} values for {n} features")


def _check_output(meta: ModelMeta) -> None:
    """A forecast predicts features; only a forecast has a horizon, from schema version 2 on."""
    out = meta.output
    if out.kind == "forecast":
        unknown = [o for o in out.names if o not in meta.features]
        if unknown:
            raise ValueError(f"output.names {unknown} are not features (a forecast predicts features)")
    if out.steps > 1:
        if out.kind != "forecast":
            raise ValueError("output.horizon > 1 is only for forecast models")
        if meta.schema_version < HORIZON_SCHEMA_VERSION:
            raise ValueError(f"output.horizon > 1 needs schema_version {HORIZON_SCHEMA_VERSION}")


def _check_calibration(meta: ModelMeta) -> None:
    """A forecast's residual statistics, one per output; known states of the features' dimension."""
    cal = meta.calibration
    if cal is None:
        return
    if meta.output.kind == "forecast":
        m = len(meta.output.names)
        for key in ("residual_mean", "residual_std"):
            vals = getattr(cal, key)
            if vals is None:
                raise ValueError(f"calibration.{key} is required for a forecast model")
            if len(vals) != m:
                raise ValueError(f"calibration.{key} has {len(vals)} values for {m} outputs")
    n = len(meta.features)
    for i, st in enumerate(cal.states or []):
        flat = [*st.mean, *(v for r in st.cov for v in r)]
        if len(st.mean) != n or len(st.cov) != n or any(len(r) != n for r in st.cov):
            raise ValueError(f"calibration.states[{i}]: mean must have {n} values and cov {n} x {n}")
        if not all(math.isfinite(v) for v in flat):
            raise ValueError(f"calibration.states[{i}] has a value that is not a finite number")


def _check_io(meta: ModelMeta) -> None:
    """Every tensor named once."""
    names = [meta.io.input, meta.io.output]
    names += [t for p in meta.io.state for t in (p.input, p.output)]
    dupes = sorted({t for t in names if names.count(t) > 1})
    if dupes:
        raise ValueError(f"io names tensors more than once: {dupes}")


def parse_meta(text: str | None) -> ModelMeta:
    """Parse and validate the metadata JSON; raise ModelFormatError naming the offending key."""
    if text is None:
        raise ModelFormatError(
            f"the model has no '{METADATA_KEY}' metadata entry: it was not written by edge-lstm-export "
            "(see docs/model-format.md)"
        )
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"metadata '{METADATA_KEY}' is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ModelFormatError(f"metadata '{METADATA_KEY}' must be a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFormatError("metadata key 'schema_version' is missing or not an integer")
    if version > SCHEMA_VERSION:
        raise ModelFormatError(
            f"metadata schema_version {version} is newer than this edge-lstm understands "
            f"({SCHEMA_VERSION}): upgrade edge-lstm"
        )
    if version < 1:
        raise ModelFormatError(f"metadata schema_version {version} is not valid")
    try:
        return ModelMeta.model_validate(raw)
    except ValidationError as e:
        raise ModelFormatError(_describe(e)) from None


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(document)"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"metadata key '{loc}': {msg}")
    return "; ".join(parts)
