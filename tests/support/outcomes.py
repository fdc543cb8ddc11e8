"""Narrowing for tests: where a test expects a `Result` (or a value that may be None), it says so, and
fails naming what it got instead of an AttributeError."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from edge_lstm import Rejection, Result

T = TypeVar("T")


def scored(outcome: Result | Rejection) -> Result:
    """The outcome, which must be a `Result`."""
    assert isinstance(outcome, Result), f"expected a Result, got {outcome!r}"
    return outcome


def all_scored(outcomes: Iterable[Result | Rejection]) -> list[Result]:
    """Every outcome, each of which must be a `Result`."""
    return [scored(o) for o in outcomes]


def present(value: T | None) -> T:
    """The value, which must not be None."""
    assert value is not None, "expected a value, got None"
    return value
