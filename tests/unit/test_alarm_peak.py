"""An alarm's `peak_score` covers the whole episode: from its first flagged reading, not from the raise
(issue 25: a raise reported peak 9.9 though the reading that started the episode scored 114.5)."""

from __future__ import annotations

import numpy as np

from edge_lstm.alarm import COLUMNS, AlarmPolicy


def run(policy: AlarmPolicy, readings: list[tuple[int, float]]) -> list[tuple[str, int, float]]:
    """(event, reading index, peak_score) for each raise and clear of one stream."""
    cols = {name: np.broadcast_to(np.asarray(c.init, c.dtype), (1, *c.shape)).copy() for name, c in COLUMNS.items()}
    events = []
    for t, (flag, score) in enumerate(readings):
        raised, cleared = policy.update(cols, np.array([bool(flag)]), np.array([score]), np.array([float(t)]))
        if raised[0] or cleared[0]:
            events.append(("raised" if raised[0] else "cleared", t, float(cols["alarm.peak"][0])))
    return events


def test_the_spike_that_starts_an_episode_is_its_peak() -> None:
    readings = [(0, 1.0)] * 5 + [(1, 114.5)] + [(1, 9.9)] * 4 + [(0, 1.0)] * 3
    assert run(AlarmPolicy(5, 10, 3), readings) == [("raised", 9, 114.5), ("cleared", 12, 114.5)]


def test_a_flag_that_left_the_window_does_not_count() -> None:
    # A spike, ten unflagged readings (it leaves the 10-reading window), then an episode scoring 6.
    readings = [(1, 50.0)] + [(0, 1.0)] * 10 + [(1, 6.0)] * 5
    assert run(AlarmPolicy(5, 10, 3), readings) == [("raised", 15, 6.0)]


def test_the_next_episode_starts_fresh() -> None:
    readings = [(1, 80.0)] * 2 + [(0, 1.0)] * 2 + [(1, 3.0)] * 2
    assert run(AlarmPolicy(2, 3, 2), readings) == [("raised", 1, 80.0), ("cleared", 3, 80.0), ("raised", 5, 3.0)]
