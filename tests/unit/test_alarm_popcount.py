"""The alarm's popcount: numpy >= 2's bitwise_count and the unpackbits fallback kept for numpy 1.26 (which
the project still allows, so CI's numpy never runs it) count the same bits as Python's int.bit_count."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm import alarm


@pytest.mark.parametrize("fallback", [False, True], ids=["bitwise_count", "unpackbits"])
def test_popcount_counts_set_bits(monkeypatch: pytest.MonkeyPatch, fallback: bool) -> None:
    if fallback:
        monkeypatch.setattr(alarm, "_bitwise_count", None)
    elif alarm._bitwise_count is None:
        pytest.skip("numpy < 2: bitwise_count does not exist; the fallback case covers this numpy")
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            np.array([0, 1, 2, 3, (1 << 62) - 1, (1 << 63) - 1], np.int64),
            rng.integers(0, 1 << 63, size=500, dtype=np.int64),
            rng.integers(0, 1 << 20, size=500, dtype=np.int64),  # alarm histories: raise_window bits
        ]
    )
    got = alarm._popcount(x)
    assert got.shape == x.shape
    assert got.tolist() == [int(v).bit_count() for v in x.tolist()]
