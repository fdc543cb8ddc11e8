"""Loading the settings: the TOML file, the environment, and errors that name the key.

    settings = load_settings("/etc/edge-lstm/config.toml")   # or $EDGE_LSTM_CONFIG, or no file

Every section refuses unknown keys, at every level and from both sources, with the nearest known key
as a suggestion (`engine.max_streamz: unknown key; did you mean 'max_streams'?`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ENV_PREFIX, env_var
from .base import CONFIG_ENV, ConfigError
from .settings import TOML_DATA, Settings

__all__ = ["describe_validation_error", "load_settings", "read_toml", "section_of", "unknown_key"]


def section_of(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The section model that field `name` of `model` holds, or None for a value (or no such field)."""
    field = model.model_fields.get(name)
    t = field.annotation if field is not None else None
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def _model_at(path: Iterable[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Settings
    for part in path:
        model = section_of(model, part) if model is not None else None
    return model


def unknown_key(name: str, known: Iterable[str]) -> str:
    """'unknown key' with the nearest known name, or the list of them when none is near."""
    known = sorted(known)
    # Spelling first (max_streamz), then a shortened name (ca -> ca_file) when only one fits.
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    prefixed = [k for k in known if k.startswith(name)]
    close = close or (prefixed if len(prefixed) == 1 else [])
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return f"unknown key (known: {', '.join(known)})"


def describe_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int)) or ("(settings)",)
        key = ".".join(loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            section = _model_at(loc[:-1])
            msg = unknown_key(loc[-1], section.model_fields if section is not None else ())
        inp = err.get("input")
        shown = "" if err["type"] == "extra_forbidden" or isinstance(inp, dict) else f" (got {inp!r})"
        if "password" in key:
            shown = ""
        lines.append(f"{key}: {msg}{shown} [env {env_var(key)}]")
    return "; ".join(lines)


def _check_env_name(name: str) -> None:
    """Refuse one `EDGE_LSTM_*` variable that names no setting (pydantic-settings would ignore it)."""
    parts = name[len(ENV_PREFIX) :].lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        key = ".".join(parts[: i + 1])
        if part not in model.model_fields:
            raise ConfigError(f"environment variable {name}: {key}: {unknown_key(part, model.model_fields)}")
        section = section_of(model, part)
        if section is None:
            if i + 1 < len(parts):
                raise ConfigError(f"environment variable {name}: {key} is a value, not a section")
            return
        model = section


def check_env(environ: Mapping[str, str]) -> None:
    """Every `EDGE_LSTM_*` variable names a setting (or a whole section, as JSON)."""
    for name in environ:
        if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_ENV:
            _check_env_name(name)


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"config file {p}: cannot read: {e.strerror or e}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p}: invalid TOML: {e}") from None


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from `config` (or $EDGE_LSTM_CONFIG), the environment and `overrides`."""
    path = config if config is not None else (os.environ.get(CONFIG_ENV) or None)
    doc = read_toml(path) if path else {}
    check_env(os.environ)
    token = TOML_DATA.set(doc)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        where = f" (config file {path})" if path else ""
        raise ConfigError(f"invalid configuration{where}: {describe_validation_error(e)}") from None
    finally:
        TOML_DATA.reset(token)
