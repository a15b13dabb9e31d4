"""The suites: one class each (suite/base.py says what a suite owns), registered here by name. Adding a
suite is its module, a line here, and its tests under suites/<name>/. Nothing is imported until used, so
`pytest --help` stays fast (the options list the names; the session imports the one it runs)."""

from __future__ import annotations

from pathlib import Path

REGISTRY = {
    "composability": "pytest_infer.suite.composability:Composability",
    "conformance": "pytest_infer.suite.conformance:Conformance",
    "regression": "pytest_infer.suite.regression:Regression",
    "smoke": "pytest_infer.suite.smoke:Smoke",
}
DEFAULT = "composability"


def tests_of(name: str) -> Path | None:
    """The suite's test files: suites/<name>/ of a checkout, or the copy inside the wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "suites" / name, here.parent / "suites" / name):
        if candidate.is_dir():
            return candidate
    return None
