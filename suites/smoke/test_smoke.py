"""Smoke: every stack starts and answers one greedy completion. `pytest --gpu KIND --suite smoke`.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_infer.space import Stack


def test_smoke(stack: Stack, infer_check: Callable[[Stack], None]) -> None:
    infer_check(stack)
