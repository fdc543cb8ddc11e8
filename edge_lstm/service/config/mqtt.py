"""`[mqtt]` and `[mqtt.tls]`: the broker, the topics, delivery and reconnection."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from ..errors import env_var
from .base import ConfigError, Section, doc_default, plain_topic

__all__ = ["MqttSettings", "TlsSettings", "cleartext_password"]


class TlsSettings(Section):
    enabled: bool = Field(default=False, description="TLS to the broker")
    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM file)", json_schema_extra=doc_default("system CAs")
    )
    cert_file: Path | None = Field(default=None, description="client certificate, PEM (mutual TLS; with `key_file`)")
    key_file: Path | None = Field(default=None, description="the client certificate's key, PEM (with `cert_file`)")
    insecure: bool = Field(default=False, description="skip the broker host name check (testing only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


def _default_client_id() -> str:
    return f"edge-lstm-{socket.gethostname()}"[:64]


class MqttSettings(Section):
    host: str = Field(default="127.0.0.1", description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="broker TCP port")
    client_id: str = Field(
        default_factory=_default_client_id,
        min_length=1,
        max_length=128,
        description="must be stable: the broker keeps the session (queued readings) under it",
        json_schema_extra=doc_default("edge-lstm-<hostname>"),
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version")
    username: str | None = Field(default=None, description="broker user name")
    password: SecretStr | None = Field(default=None, description="broker password; secret: never logged or echoed")
    password_file: Path | None = Field(
        default=None,
        description="a file holding the password (e.g. a systemd credential), used when `password` is unset",
        json_schema_extra=doc_default("$CREDENTIALS_DIRECTORY/mqtt_password if present"),
    )
    tls: TlsSettings = Field(default_factory=TlsSettings, description="TLS to the broker")
    keepalive: int = Field(default=30, ge=5, le=65535, description="MQTT keepalive, seconds")
    qos_in: Literal[0, 1] = Field(default=1, description='subscription QoS; QoS 1 is required for "nothing lost"')
    qos_out: Literal[0, 1] = Field(default=1, description="QoS of results and errors")
    input_pattern: str = Field(
        default="sensors/{stream}",
        description="where readings arrive; `{stream}` is a whole topic level (subscribed with `+` there)",
    )
    output_pattern: str = Field(
        default="edge-lstm/scores/{stream}", description="where results go; the stream id is sanitised (topics.py)"
    )
    alarm_pattern: str = Field(
        default="edge-lstm/alarms/{stream}",
        description='retained alarm state changes (README, "MQTT topics and payloads"); `""` = not published',
    )
    status_topic: str = Field(
        default="edge-lstm/status", min_length=1, description="retained `online` / `offline` (last will)"
    )
    errors_topic: str = Field(
        default="edge-lstm/errors",
        description="each rejected reading as JSON `{stream, reason, detail, topic, hint}`, at most "
        '`log.rejections_burst` per reason per `log.rejections_interval_s` (as the log); `""` = not published',
    )
    stats_topic: str = Field(
        default="edge-lstm/stats",
        description='retained stats JSON every `log.stats_interval_s`; `""` = not published',
    )
    session_expiry_s: int = Field(
        default=86_400,
        ge=0,
        le=4_294_967_295,
        description="seconds the broker keeps our session (and queues readings) while we are away (MQTT v5)",
    )
    # Bounds the daemon's inbound queue: readings are acked only after their result.
    receive_maximum: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="MQTT v5 Receive Maximum: unacknowledged readings the broker may send us "
        "(mosquitto 2.0.11 does not enforce it: see `engine.max_queue`)",
    )
    # paho's own window is off (docs/performance.md).
    max_inflight: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="results awaiting the broker's PUBACK: the daemon stops taking readings at "
        "`engine.max_queue` + this many unacknowledged ones (docs/performance.md)",
    )
    reconnect_min_delay_s: float = Field(
        default=1.0, gt=0, description="reconnect backoff starts here, seconds (paho rounds to whole seconds ≥ 1)…"
    )
    reconnect_max_delay_s: float = Field(
        default=30.0, gt=0, description="…and doubles up to this, seconds (≥ `reconnect_min_delay_s`)"
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _proto_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("qos_in", "qos_out", mode="before")
    @classmethod
    def _qos_int(cls, v: Any) -> Any:
        # Environment variables arrive as text; Literal[0, 1] would refuse "0".
        return int(v) if isinstance(v, str) and v.strip() in ("0", "1") else v

    @field_validator("input_pattern", "output_pattern", "alarm_pattern")
    @classmethod
    def _pattern(cls, v: str, info: ValidationInfo) -> str:
        from ...topics import TopicPattern

        if v or info.field_name != "alarm_pattern":
            TopicPattern(v)  # raises ValueError with a clear message
        return v

    @field_validator("status_topic", "errors_topic", "stats_topic")
    @classmethod
    def _plain_topic(cls, v: str) -> str:
        return plain_topic(v)

    @model_validator(mode="after")
    def _delays(self) -> MqttSettings:
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError("reconnect_max_delay_s must be >= reconnect_min_delay_s")
        return self

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        path, where = self.password_file, "mqtt.password_file"
        env = env_var("mqtt.password_file")
        if path is None:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            if creds and (Path(creds) / "mqtt_password").exists():
                path, where, env = Path(creds) / "mqtt_password", "credential mqtt_password", "CREDENTIALS_DIRECTORY"
        if path is None:
            return None
        try:
            return path.read_text().rstrip("\r\n")
        except IsADirectoryError:
            raise ConfigError(f"{where}: {path} is a directory, not a file [env {env}]") from None
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {path}: {e.strerror or e} [env {env}]") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: {path} is not UTF-8 text [env {env}]") from None


def cleartext_password(m: MqttSettings) -> bool:
    """A password would cross the network unencrypted: no TLS and a broker that is not this host."""
    if m.tls.enabled or (m.password is None and m.password_file is None):
        return False
    host = m.host.strip("[]").lower()
    if host in ("localhost", "::1") or host.startswith("127."):
        return False
    return True
