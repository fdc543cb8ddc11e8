"""The error a bad start raises, and how a setting is named in it.

Here rather than in `startup.py` so that `config` (whose `ConfigError` is a `StartupError`) and
`startup` (which checks a loaded `Settings`) do not import each other.
"""

from __future__ import annotations

ENV_PREFIX = "EDGE_LSTM_"
EXIT_STARTUP = 2


class StartupError(Exception):
    """A start that cannot succeed until the operator changes something. The CLI exits `exit_code`."""

    exit_code = EXIT_STARTUP


def env_var(key: str) -> str:
    """The environment variable of a dotted settings key: `mqtt.tls.ca_file` → EDGE_LSTM_MQTT__TLS__CA_FILE."""
    return ENV_PREFIX + key.replace(".", "__").upper()


def setting_error(key: str, message: str) -> StartupError:
    return StartupError(f"{key}: {message} [env {env_var(key)}]")
