"""Regression: is each stack still as fast as its stored baseline?

`pytest --gpu KIND --suite regression --baseline-update` measures every stack and writes
baselines/<gpu>/<engine>/<model>/<stack>.yaml; `pytest --gpu KIND --suite regression` measures again and
compares per matched interactivity level, with the same intervals and margin as composability. A missing
baseline, or one from another environment, is a skip with the reason (a failure with --baseline-strict).
"""

from __future__ import annotations

import pytest

from pytest_infer.measure.baselines import BaselineError
from pytest_infer.measure.runner import MeasurementFailed
from pytest_infer.session import InferSession
from pytest_infer.space import Stack


def test_regression(stack: Stack, infer: InferSession, request: pytest.FixtureRequest) -> None:
    try:
        outcome = infer.regression(stack)
    except MeasurementFailed as exc:
        infer.record(request.node, stack, None, None, message=str(exc))
        pytest.fail(f"{stack.id}: could not be measured: {exc}", pytrace=False)
    except BaselineError as exc:
        infer.record(request.node, stack, None, None, message=str(exc))
        pytest.fail(f"{stack.id}: broken baseline: {exc}", pytrace=False)
    infer.record(request.node, stack, outcome.verdict, outcome.measurement, message=outcome.message)
    if outcome.kind in ("missing", "mismatch"):
        if request.config.getoption("baseline_strict"):
            pytest.fail(f"{stack.id} regression: {outcome.message}", pytrace=False)
        pytest.skip(outcome.message)
    verdict = outcome.verdict
    if verdict is None:  # --baseline-update: written
        return
    if verdict.verdict == "inconclusive":
        pytest.skip(f"inconclusive: {verdict.message}")
    if verdict.verdict == "fail":
        pytest.fail(f"{stack.id} regression: {verdict.message}", pytrace=False)
