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
    g = Gathered(table, np.array([2, 0]), {"v": np.dtype(np.float64)})
    assert g["v"].dtype == np.float64
    g["v"] += 0.1
    g.scatter()
    assert table["v"].dtype == np.float32 and table["v"][2].tolist() == [np.float32(0.1)] * 2


def test_consecutive_slots_are_gathered_as_copies_and_scattered_like_any_others() -> None:
    # One slot, or consecutive ascending ones, take the slice path (state._as_slice): the same copies and
    # the same writes back as the gather of any other slots.
    for slots in (np.array([1, 2]), np.array([2]), np.array([0, 1, 2, 3])):
        table = {"a": np.arange(8.0).reshape(4, 2), "v": np.zeros((4, 2), np.float32)}
        before = table["a"].copy()
        g = Gathered(table, slots, {"v": np.dtype(np.float64)})
        assert g["a"].tolist() == before[slots].tolist()
        assert g["v"].dtype == np.float64
        g["a"][0, 1] = -1.0  # a copy: the table is unchanged until scatter
        g["v"] += 0.1
        assert np.array_equal(table["a"], before) and not table["v"].any()
        g.scatter()
        want = before.copy()
        want[slots[0], 1] = -1.0
        assert np.array_equal(table["a"], want)
        assert table["v"][slots].tolist() == [[np.float32(0.1)] * 2] * len(slots)
        assert not np.delete(table["v"], slots, axis=0).any()


def test_slots_out_of_order_or_with_holes_are_gathered_by_index() -> None:
    for slots in (np.array([2, 1]), np.array([0, 2]), np.array([1, 0, 2])):
        table = {"a": np.arange(8.0).reshape(4, 2)}
        g = Gathered(table, slots)
        assert g["a"].tolist() == np.arange(8.0).reshape(4, 2)[slots].tolist()
        g["a"] = g["a"] + 100.0
        g.scatter()
        assert table["a"][slots].tolist() == (np.arange(8.0).reshape(4, 2)[slots] + 100.0).tolist()


def test_as_rows_is_a_slice_only_for_consecutive_ascending_slots() -> None:
    from edge_lstm.state import as_rows

    for n in (1, 2, 23, 64, 65, 300):
        assert as_rows(np.arange(7, 7 + n, dtype=np.intp)) == slice(7, 7 + n)
        if n > 1:
            holes = np.arange(7, 7 + n, dtype=np.intp)
            holes[n // 2] = 7 + n  # one hole, the same first and last slot
            holes[-1] = 7 + n - 1
            swapped = np.arange(7, 7 + n, dtype=np.intp)
            swapped[[0, 1]] = swapped[[1, 0]]
            cases = [swapped, np.arange(7 + n, 7, -1, dtype=np.intp)] + ([holes] if n > 2 else [])
            for slots in cases:
                got = as_rows(slots)
                assert isinstance(got, np.ndarray) and np.array_equal(got, slots)


def test_a_column_stored_as_int32_is_computed_in_int64_and_saturated_on_scatter() -> None:
    table = {"n": np.zeros(3, np.int32)}
    g = Gathered(table, np.array([0, 2]), {"n": np.dtype(np.int64)})
    assert g["n"].dtype == np.int64
    g["n"] = np.array([2**31 + 5, -(2**31) - 5])  # past int32's bounds: saturated, not wrapped around
    g.scatter()
    assert table["n"].tolist() == [2**31 - 1, 0, -(2**31)]
