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


SYM = {"c.cov": Column((3, 3), np.float64, np.eye(3), symmetric=True), "c.vec": Column((3,), np.float64, 1.0)}


def test_a_symmetric_matrix_is_stored_as_its_upper_triangle_and_computed_whole() -> None:
    t = StateTable([(1, 4)], 2, max_streams=4, columns=SYM)
    assert t.columns["c.cov"].shape == (4, 6) and t.columns["c.cov"].dtype == np.float32
    slot, _ = t.acquire("s")
    cols = t.gather(np.array([slot]))
    np.testing.assert_array_equal(cols["c.cov"], np.eye(3)[None])  # the init, unpacked, in float64
    assert cols["c.cov"].dtype == np.float64
    m = np.array([[2.0, 0.5, -1.0], [0.5, 3.0, 0.25], [-1.0, 0.25, 4.0]])
    cols["c.cov"] = m[None]
    cols.scatter()
    np.testing.assert_array_equal(t.columns["c.cov"][slot], [2.0, 0.5, -1.0, 3.0, 0.25, 4.0])
    np.testing.assert_array_equal(t.row("s").columns["c.cov"], m)  # handed out whole (spills, inspect)
    # A row of a release that stored it whole (a spill, an older checkpoint) is packed on restore.
    row = t.row("s")
    t.restore(StreamState("r", row.states, 2.0, 1, 0, np.zeros(2), {"c.cov": 2 * m, "c.vec": np.ones(3)}))
    np.testing.assert_array_equal(t.row("r").columns["c.cov"], 2 * m)


def test_a_column_only_peeked_is_not_written_back() -> None:
    t = StateTable([(1, 4)], 2, max_streams=4, columns=SYM)
    slot, _ = t.acquire("s")
    cols = t.gather(np.array([slot]))
    peeked = cols.peek("c.cov")
    assert cols.peek("c.cov") is peeked  # gathered once
    peeked[:] = 7.0  # a round that (wrongly) wrote it: not scattered
    cols["c.vec"][:] = 5.0
    cols.scatter()
    np.testing.assert_array_equal(t.row("s").columns["c.cov"], np.eye(3))
    np.testing.assert_array_equal(t.row("s").columns["c.vec"], [5.0, 5.0, 5.0])


def test_a_symmetric_column_must_be_square() -> None:
    import pytest

    with pytest.raises(ValueError, match="square"):
        Column((3, 2), np.float64, symmetric=True)


def test_the_packaged_models_row_fits_its_bound() -> None:
    """The bytes a stream's row costs in the table of the packaged model (3 features, 32 known states):
    1,089 before the symmetric matrices were packed (issue 22's budget is ~1.1 KB per stream all-in,
    with the id index's ~40 bytes on top); the likelihood's time-of-day statistic adds 132 bytes with its
    default 12 bins (issue 24, docs/quality.md "Time of day": a trade against that budget, measured)."""
    from edge_lstm import Engine, load_model
    from edge_lstm.scoring import ScoringConfig

    engine = Engine(load_model(None), max_streams=8)
    engine.table.acquire("s")
    assert engine.table.nbytes() <= 1152  # one row in use of 8: 1,149 bytes
    without = Engine(load_model(None), max_streams=8, scoring=ScoringConfig(daily_bins=0))
    without.table.acquire("s")
    assert without.table.nbytes() <= 1020  # 1,017 bytes
