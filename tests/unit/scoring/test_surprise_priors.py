"""The surprise channel's precomputed prior tails are exactly what its fixed-seed sample gives."""

from __future__ import annotations

import pytest

from edge_lstm.scoring.channels._priors import TAIL_PRIORS
from edge_lstm.scoring.channels.surprise import tail_prior


@pytest.mark.parametrize("dof", sorted(TAIL_PRIORS))
def test_the_table_is_the_sample(dof: int) -> None:
    assert tail_prior(dof) == tail_prior(dof, table=False)  # the same floats, bit for bit


def test_a_dof_beyond_the_table_is_sampled() -> None:
    assert 33 not in TAIL_PRIORS
    u, sigma = tail_prior(33)
    assert 1.0 < u < 1.2 and 0 < sigma < 0.05
