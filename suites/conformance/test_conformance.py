"""Conformance: does each stack still give the right answers?

`pytest --gpu KIND --suite conformance`. One test per stack: its accuracy (lm-eval against the deployment),
parity with its reference (paired non-inferiority on per-sample outcomes; FP4 stacks also against FP8),
the model's floor, and greedy-output agreement for lossless optimizations (disagg, wideep, mtp).
`--results DIR` replays a results store (paired) or published score rows such as InferenceX's
gsm8k-evals.json (unpaired, said so).
"""

from __future__ import annotations

import json

import pytest

from pytest_infer.conformance import Conformance
from pytest_infer.measure.runner import MeasurementFailed
from pytest_infer.session import PROPERTY, InferSession
from pytest_infer.space import Stack


@pytest.fixture(scope="session")
def conformance(infer: InferSession) -> Conformance:
    return Conformance(infer)


def test_conformance(stack: Stack, infer: InferSession, conformance: Conformance,
                     request: pytest.FixtureRequest) -> None:
    try:
        outcome = conformance.check(stack)
    except MeasurementFailed as exc:
        infer.record(request.node, stack, None, None, message=str(exc))
        pytest.fail(f"{stack.id}: could not be measured: {exc}", pytrace=False)
    message = outcome.message()
    row = {"stack": stack.id, "message": message, "verdict": outcome.verdict, **outcome.row()}
    request.node.user_properties.append((PROPERTY, json.dumps(row)))
    for key in ("score", "stderr", "n", "mtp_acceptance_rate", "verdict"):
        if key in row:
            request.node.user_properties.append((key, row[key]))
    for c in outcome.checks:
        name = c.check.replace(" ", "_")
        request.node.user_properties.append((f"{name}", c.verdict))
        if c.value is not None:
            request.node.user_properties.append((f"{name}_value", round(c.value, 4)))
        if c.low is not None and c.high is not None:
            request.node.user_properties.append((f"{name}_interval", f"[{c.low:.4f}, {c.high:.4f}]"))
    if outcome.verdict == "fail":
        pytest.fail(f"{stack.id} conformance: {message}", pytrace=False)
    if outcome.verdict == "inconclusive":
        pytest.skip(f"inconclusive: {message}")
