"""The state table's storage dtypes: float64 columns as float32, int64 as int32 (saturated), `exact` as
declared; rows handed out in the declared dtypes (spills, checkpoints, inspect)."""

from __future__ import annotations

import numpy as np

from edge_lstm.state import Column, StateTable, StreamState

COLUMNS = {
    "c.level": Column((), np.float64, 0.5),
    "c.count": Column((), np.float64, 0.0, exact=True),
    "c.run": Column((2,), np.int64, 0),
    "c.bits": Column((), np.int64, 0, exact=True),
    "c.flag": Column((), np.bool_, False),
}


def table() -> StateTable:
    return StateTable([(1, 4)], 2, max_streams=4, columns=COLUMNS)


def test_columns_are_stored_narrow_unless_exact() -> None:
    t = table()
    stored = {k: a.dtype for k, a in t.columns.items()}
    assert stored == {
        "c.level": np.float32,
        "c.count": np.float64,
        "c.run": np.int32,
        "c.bits": np.int64,
        "c.flag": np.bool_,
    }
    slot, _ = t.acquire("s")
    cols = t.gather(np.array([slot]))
    assert cols["c.level"].dtype == np.float64 and cols["c.run"].dtype == np.int64  # computed as declared
    row = t.row("s")
    assert {k: v.dtype for k, v in row.columns.items()} == {k: np.dtype(c.dtype) for k, c in COLUMNS.items()}


def test_a_restored_count_past_int32_saturates_instead_of_wrapping() -> None:
    t = table()
    cols = {"c.run": np.array([2**31 + 7, 3], np.int64), "c.bits": np.array(2**40), "c.count": np.array(2.0**30 + 1)}
    t.restore(StreamState("s", [np.zeros((1, 4), np.float32)], 1.0, 1, 0, np.zeros(2), cols))
    row = t.row("s")
    assert row.columns["c.run"].tolist() == [2**31 - 1, 3]
    assert int(row.columns["c.bits"]) == 2**40 and float(row.columns["c.count"]) == 2**30 + 1  # exact: as given
