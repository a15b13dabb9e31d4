"""Smoke: every stack starts and answers one greedy completion. `pytest --gpu KIND --suite smoke`."""

from __future__ import annotations

import pytest

from pytest_infer.measure.runner import MeasurementFailed
from pytest_infer.session import InferSession
from pytest_infer.space import Stack


def test_smoke(stack: Stack, infer: InferSession, request: pytest.FixtureRequest) -> None:
    try:
        result = infer.smoke(stack)
    except MeasurementFailed as exc:
        infer.record(request.node, stack, None, None, message=str(exc))
        pytest.fail(f"{stack.id}: smoke failed: {exc}", pytrace=False)
    infer.record(request.node, stack, None, None, message=(
        f"healthy after {result.launch_s:.0f} s; one greedy completion in {result.first_s:.2f} s: {result.text!r}"))
    request.node.user_properties += [("launch_s", round(result.launch_s, 1)),
                                     ("first_request_s", round(result.first_s, 2))]
