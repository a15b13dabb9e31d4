"""Composability: does each stack beat the best of its parts at matched interactivity?

`pytest --gpu KIND --suite composability`. One test per stack; base is the reference and only has to
be measured. A stack's parts are measured once each and shared by every stack that needs them. The check
is pytest_infer.suite.composability.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_infer.space import Stack


def test_composability(stack: Stack, infer_check: Callable[[Stack], None]) -> None:
    infer_check(stack)
