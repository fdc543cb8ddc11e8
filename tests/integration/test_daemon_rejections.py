"""Bad input is rejected with a reason, counted, forwarded to the errors topic, and harms no stream."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.onnx_model import default_model_path

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
# One bogus time a day ahead, the same every time: readings that agree on a newer and newer time ahead
# would be admitted by the clock rule (reading.FutureGuard: a sensor whose clock runs ahead); this never is.
FUTURE = time.time() + 86400
ROOT = Path(__file__).resolve().parents[2]


def good(i: int, k: int) -> bytes:
    return reading_payload(T0 + i, [((i * 3 + k) % 7) / 7, ((i + k) % 5) / 5, (i % 3) / 3])


def bad_payloads(i: int) -> list[tuple[bytes, str]]:
    """(payload, expected reason) — sent to stream g<k> after its i-th good reading."""
    return [
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"not json", "not_json"),
        (b"[1, 2, 3]", "bad_shape"),
        (reading_payload(T0 + i + 0.5, [1, 2]), "wrong_length"),
        (reading_payload(T0 + i + 0.5, [1, "x", 3]), "not_number"),
        (b'{"ts": %f, "values": [NaN, 1, 2]}' % (T0 + i + 0.5), "not_finite"),
        (reading_payload("yesterday", [1, 2, 3]), "bad_ts"),
        (reading_payload(FUTURE, [1, 2, 3]), "ts_in_future"),
        (reading_payload(T0 + i + 0.5, a=1), "missing_feature"),
        (b'{"values": [' + b"1," * 3000 + b"1]}", "too_large"),
        (good(i, 0), "duplicate"),  # same ts as the good reading just sent
        (reading_payload(T0 + i - 0.5, [9, 9, 9]), "out_of_order"),
    ]


def test_bad_payloads_rejected_and_streams_unharmed(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    col = collector(broker.port, ["edge-lstm/scores/#", "edge-lstm/errors"])
    cfg = daemon_config(
        broker,
        step_model_path,
        tmp_path / "state",
        log={"rejections_burst": 3, "rejections_interval_s": 3600},
    )
    d = run_daemon(cfg)
    d.wait_ready()
    pub = publisher(broker.port)
    n, streams = 6, 3
    expected: dict[str, int] = {}
    for i in range(n):
        for k in range(streams):
            # g<k> gets each good reading followed by garbage; h<k> gets the same good readings only.
            v = good(i, k)
            pub.send(f"sensors/g{k}", v)
            pub.send(f"sensors/h{k}", v)
            if i >= 1:  # after the first reading, so duplicate/out_of_order have a last ts
                for payload, reason in bad_payloads(i):
                    if reason == "duplicate":
                        payload = v
                    pub.send(f"sensors/g{k}", payload)
                    expected[reason] = expected.get(reason, 0) + 1
        pub.send("sensors/", reading_payload(T0 + i, [1, 2, 3]))  # empty stream level
        expected["bad_stream"] = expected.get("bad_stream", 0) + 1
    pub.flush()
    # Published as logged: at most `burst` (3) per reason per interval.
    published = {reason: min(count, 3) for reason, count in expected.items()}
    col.wait_count("edge-lstm/errors", sum(published.values()))
    col.wait_count("edge-lstm/scores/", 2 * n * streams)

    errors = col.json("edge-lstm/errors")
    got: dict[str, int] = {}
    for e in errors:
        assert set(e) == {"stream", "reason", "detail", "topic", "hint"} and e["hint"]
        got[e["reason"]] = got.get(e["reason"], 0) + 1
    assert got == published

    by_topic: dict[str, list[dict[str, Any]]] = {}
    for t, p, _ in col.snapshot("edge-lstm/scores/"):
        by_topic.setdefault(t.rsplit("/", 1)[1], []).append(json.loads(p))
    for k in range(streams):
        g, h = by_topic[f"g{k}"], by_topic[f"h{k}"]
        assert len(g) == len(h) == n
        for rg, rh in zip(g, h):
            rg.pop("stream"), rh.pop("stream")
            assert rg == rh  # identical scores and predictions: garbage changed nothing

    assert d.terminate() == 0
    events = d.events()
    stats = [e for e in events if e["event"] == "stats"][-1]
    assert stats["rejected"] == expected
    assert stats["results"] == 2 * n * streams
    # Rate limiting: at most `burst` full lines per reason, the rest summarised with counts.
    rejected = [e for e in events if e["event"] == "rejected"]
    per_reason: dict[str, int] = {}
    for e in rejected:
        per_reason[e["reason"]] = per_reason.get(e["reason"], 0) + 1
    assert max(per_reason.values()) <= 3
    summary = [e for e in events if e["event"] == "rejected_suppressed"]
    assert summary, "suppressed rejections must be summarised"
    suppressed = summary[-1]["counts"]
    for reason, count in expected.items():
        assert per_reason.get(reason, 0) + suppressed.get(reason, 0) == count


def test_the_readme_example_published_twice_says_why_on_the_errors_topic(
    broker: PrivateBroker, tmp_path: Path, run_daemon: Callable[..., DaemonProcess], collector: Callable[..., Collector]
) -> None:
    """A newcomer's first hour: the README's mosquitto_pub line, run twice, against the default topics."""
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("mosquitto_pub ") and "sensors/pump-7" in x)
    args = shlex.split(line)
    topic, payload = args[args.index("-t") + 1], args[args.index("-m") + 1]
    col = collector(broker.port, ["edge-lstm/#"])
    d = run_daemon(daemon_config(broker, default_model_path(), tmp_path / "state"))  # the packaged model
    d.wait_ready()
    for _ in range(2):
        subprocess.run(
            ["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", topic, "-m", payload], check=True, timeout=30
        )
    col.wait_count("edge-lstm/errors", 1)
    (error,) = col.json("edge-lstm/errors")
    assert (error["stream"], error["reason"], error["topic"]) == ("pump-7", "duplicate", topic)
    assert error["hint"] == "already scored; publish a new ts"
    assert len(col.snapshot("edge-lstm/scores/pump-7")) == 1
    assert d.terminate() == 0
