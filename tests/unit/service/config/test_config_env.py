"""Settings from the environment are the same as from TOML (issue 20: `EDGE_LSTM_MQTT__QOS_OUT=0` was
refused, "Input should be 0 or 1 (got '0')")."""

from __future__ import annotations

import pytest

from edge_lstm.service.config import ConfigError, load_settings


@pytest.mark.parametrize("value, want", [("0", 0), ("1", 1), (" 0 ", 0)])
def test_qos_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, want: int) -> None:
    monkeypatch.setenv("EDGE_LSTM_MQTT__QOS_OUT", value)
    monkeypatch.setenv("EDGE_LSTM_MQTT__QOS_IN", value)
    m = load_settings(None).mqtt
    assert (m.qos_out, m.qos_in) == (want, want)


def test_a_bad_qos_from_the_environment_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_LSTM_MQTT__QOS_OUT", "2")
    with pytest.raises(ConfigError, match="qos_out"):
        load_settings(None)
