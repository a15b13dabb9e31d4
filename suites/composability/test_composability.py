"""Composability: does each stack beat the best of its parts at matched interactivity?

`pytest --gpu KIND --suite composability`. One test per stack; base is the reference and only has to
be measured. A stack's parts are measured once each and shared by every stack that needs them.
"""

from __future__ import annotations

import pytest

from pytest_infer.measure.runner import MeasurementFailed
from pytest_infer.session import InferSession
from pytest_infer.space import Stack


def test_composability(stack: Stack, infer: InferSession, request: pytest.FixtureRequest) -> None:
    try:
        verdict, measurement = infer.composability(stack)
    except MeasurementFailed as exc:
        infer.record(request.node, stack, None, None, message=str(exc))
        pytest.fail(f"{stack.id}: could not be measured: {exc}", pytrace=False)
    if measurement.warnings:  # e.g. replayed levels where requests failed: the numbers may flatter the stack
        verdict.message += "\nwarnings: " + "; ".join(measurement.warnings)
    infer.record(request.node, stack, verdict, measurement)
    if verdict.verdict == "inconclusive":
        pytest.skip(f"inconclusive: {verdict.message}")
    if verdict.verdict == "fail":
        pytest.fail(f"{stack.id} composability: {verdict.message}", pytrace=False)
