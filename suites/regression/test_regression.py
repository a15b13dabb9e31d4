"""Regression: is each stack still as fast as its stored baseline?

`pytest --gpu KIND --suite regression --baseline-update` measures every stack and writes its baseline;
without it each stack is measured anew and compared. The check is pytest_infer.suite.regression.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_infer.space import Stack


def test_regression(stack: Stack, infer_check: Callable[[Stack], None]) -> None:
    infer_check(stack)
