"""The CI examples in examples/ci parse, gate on the regression suite (merge-base baseline, then the PR),
and use only options that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest_plugins = ["pytester"]
CI = Path(__file__).resolve().parent.parent / "examples" / "ci"


def _commands(doc: Any) -> list[str]:
    """Every shell script in a GitHub Actions workflow (steps' run) or a Buildkite pipeline (command)."""
    if "jobs" in doc:
        return [s["run"] for job in doc["jobs"].values() for s in job["steps"] if "run" in s]
    return [s["command"] for s in doc["steps"]]


def _pytest_lines(script: str) -> list[str]:
    joined = script.replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip().startswith("pytest ")]


@pytest.mark.parametrize("name", ["github-actions.yml", "buildkite.yml"])
def test_ci_example_measures_the_base_then_gates_the_change(name: str, pytester: pytest.Pytester) -> None:
    doc = yaml.safe_load((CI / name).read_text())
    lines = [ln for script in _commands(doc) for ln in _pytest_lines(script)]
    assert len(lines) == 2, lines
    update, gate = lines
    assert "--suite regression" in update and "--baseline-update" in update
    assert "--suite regression" in gate and "--baseline-update" not in gate and "--baseline-strict" in gate
    base_dir = re.search(r"--baseline-dir (\S+)", update)
    assert base_dir and base_dir.group(1) in gate  # the PR is compared with what the base step wrote
    script = "\n".join(_commands(doc))
    assert script.index("merge-base") < script.index("--baseline-update") < script.index("--baseline-strict")
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    for opt in {o for ln in lines for o in re.findall(r"(?<!\S)(--[a-z][a-z-]+|-n)(?=\s)", ln)}:
        assert opt in help_text, f"{name}: {opt} is not a pytest option here"
