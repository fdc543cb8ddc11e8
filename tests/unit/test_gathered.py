"""StateTable.gather: columns copied when first looked up, only those looked up or assigned written back."""

from __future__ import annotations

import numpy as np

from edge_lstm.state import Gathered


def test_gather_is_lazy_and_scatters_what_was_used() -> None:
    table = {"a": np.arange(8.0).reshape(4, 2), "b": np.zeros(4), "c": np.ones(4)}
    before_c = table["c"].copy()
    g = Gathered(table, np.array([3, 1]))
    assert len(g) == 0  # nothing copied yet
    assert "a" in g and "c" in g and "missing" not in g  # membership asks the table
    assert g["a"].tolist() == [[6.0, 7.0], [2.0, 3.0]]
    g["a"][0, 1] = -1.0  # a copy: the table is unchanged until scatter
    assert table["a"][3, 1] == 7.0
    g["b"] = np.array([5.0, 6.0])  # assigned without a lookup
    table["c"][1] = 42.0  # a column never looked up is not written back over this
    g.scatter()
    assert table["a"][3].tolist() == [6.0, -1.0] and table["a"][0].tolist() == [0.0, 1.0]
    assert table["b"].tolist() == [0.0, 6.0, 0.0, 5.0]
    assert table["c"][1] == 42.0 and np.array_equal(np.delete(table["c"], 1), np.delete(before_c, 1))


def test_a_column_stored_as_float32_is_computed_in_float64_and_rounded_on_scatter() -> None:
    table = {"v": np.zeros((3, 2), np.float32)}
    g = Gathered(table, np.array([2, 0]), {"v": np.float64})
    assert g["v"].dtype == np.float64
    g["v"] += 0.1
    g.scatter()
    assert table["v"].dtype == np.float32 and table["v"][2].tolist() == [np.float32(0.1)] * 2


def test_a_column_stored_as_int32_is_computed_in_int64_and_saturated_on_scatter() -> None:
    table = {"n": np.zeros(3, np.int32)}
    g = Gathered(table, np.array([0, 2]), {"n": np.int64})
    assert g["n"].dtype == np.int64
    g["n"] = np.array([2**31 + 5, -(2**31) - 5])  # past int32's bounds: saturated, not wrapped around
    g.scatter()
    assert table["n"].tolist() == [2**31 - 1, 0, -(2**31)]
