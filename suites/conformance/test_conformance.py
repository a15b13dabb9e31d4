"""Conformance: does each stack still give the right answers?

`pytest --gpu KIND --suite conformance`. One test per stack: its accuracy (lm-eval against the deployment),
parity with its reference (paired non-inferiority on per-sample outcomes; FP4 stacks also against FP8),
the model's floor, and greedy-output agreement for lossless optimizations (disagg, wideep, mtp). The check
is pytest_infer.suite.conformance.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_infer.space import Stack


def test_conformance(stack: Stack, infer_check: Callable[[Stack], None]) -> None:
    infer_check(stack)
