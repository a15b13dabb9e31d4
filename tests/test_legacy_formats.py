"""On-disk formats of the last release still read: a results store and baselines written by pytest-infer at
1f474ad (tests/data/legacy/README.md says how), replayed with no engine. The numbers asserted are the ones
that release printed on the same replay: a replay is deterministic, so any change is a change in how the
old files are read or judged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
STACKS = "not (fast and slow)"  # what the fixtures hold: base, fast, slow (no fast+slow)

# The spellings of the release the fixtures come from, and the --infer- ones that replaced them.
SPELLINGS = {
    "old-spellings": {"results": "--results", "engine": "--engine", "report_dir": "--report-dir",
                      "stack": "--stack", "baseline_dir": "--baseline-dir"},
    "infer-spellings": {"results": "--infer-results", "engine": "--infer-engine",
                        "report_dir": "--infer-report-dir", "stack": "--infer-stack",
                        "baseline_dir": "--infer-baseline-dir"},
}
_ABSENT = object()


@pytest.fixture(params=list(SPELLINGS))
def spelling(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "infer-spellings" and request.config.getoption("infer_results", _ABSENT) is _ABSENT:
        pytest.skip("this version has no --infer-results (only the old spellings)")
    return SPELLINGS[request.param]


def _replay(pytester: pytest.Pytester, opt: dict[str, str], suite: str, *args: str) -> pytest.RunResult:
    """The suite on a copy of the legacy store (nothing written next to the committed fixtures)."""
    for name in ("matrices", "store", "baselines"):
        shutil.copytree(LEGACY / name, pytester.path / name)
    return pytester.runpytest_subprocess(
        "--gpu", "cpu", "--suite", suite, "--infer-matrices", str(pytester.path / "matrices"),
        opt["results"], str(pytester.path / "store"), opt["engine"], "fake", opt["stack"], STACKS,
        opt["report_dir"], str(pytester.path / "r"), "-p", "no:cacheprovider", "-rs", *args)


def _summary(result: pytest.RunResult) -> dict[str, str]:
    """stack id -> its line in the plugin's terminal summary."""
    out = result.stdout.str()
    assert "= pytest-infer =" in out, out
    tail = out.split("= pytest-infer =")[-1]
    return {ln.split(":", 1)[0]: ln for ln in tail.splitlines() if ln.startswith("cpu-fake-")}


def test_a_legacy_store_replays_with_the_verdicts_and_ratios_it_had(pytester: pytest.Pytester,
                                                                     spelling: dict[str, str]) -> None:
    result = _replay(pytester, spelling, "composability")
    out = result.stdout.str()
    assert "no stored result" not in out and "launching" not in out, out
    assert {k: v for k, v in result.parseoutcomes().items() if k != "deselected"} == {"passed": 2, "failed": 1}, out
    lines = _summary(result)
    assert sorted(lines) == ["cpu-fake-base", "cpu-fake-fast", "cpu-fake-slow"], out
    assert lines["cpu-fake-base"].startswith("cpu-fake-base: PASS"), lines
    assert lines["cpu-fake-fast"].startswith("cpu-fake-fast: PASS") and "ratio 2.762 vs base" in lines["cpu-fake-fast"]
    slow = lines["cpu-fake-slow"]
    assert slow.startswith("cpu-fake-slow: FAIL") and "slow is slower than its part base beyond the 5% margin " \
        "at 19.5 tok/s/user: slow 92.2 vs base 848.2 tok/s/GPU, ratio 0.109 [0.093, 0.127] " \
        "(95% t interval, n=3/3)" in slow, slow


def test_a_legacy_store_is_compared_with_legacy_baselines(pytester: pytest.Pytester,
                                                          spelling: dict[str, str]) -> None:
    """Both written on one machine with one workload, engine and model: the same environment, so each stack
    is compared (a foreign or unreadable baseline is a skip or a failure, never these ratios)."""
    result = _replay(pytester, spelling, "regression", spelling["baseline_dir"], str(pytester.path / "baselines"))
    out = result.stdout.str()
    assert "another environment" not in out and "no baseline" not in out and "broken baseline" not in out, out
    assert {k: v for k, v in result.parseoutcomes().items() if k != "deselected"} == {"passed": 3}, out
    lines = _summary(result)
    assert sorted(lines) == ["cpu-fake-base", "cpu-fake-fast", "cpu-fake-slow"], out
    for stack, ratio in (("base", "1.004"), ("fast", "1.012"), ("slow", "0.962")):
        assert lines[f"cpu-fake-{stack}"].startswith(f"cpu-fake-{stack}: PASS ratio {ratio} vs baseline"), lines
    md = (pytester.path / "r" / "cpu" / "regression.md").read_text()
    assert "base keeps up with the baseline at 4 matched level(s); worst at 9.9 tok/s/user: base 1180.6 vs " \
           "baseline 1175.9 tok/s/GPU, ratio 1.004 [0.998, 1.010] (95% t interval, n=3/3)" in md, md
    assert "fast 2325.8 vs baseline 2297.9 tok/s/GPU, ratio 1.012 [0.988, 1.036]" in md, md
    assert "slow 92.2 vs baseline 95.8 tok/s/GPU, ratio 0.962 [0.840, 1.102]" in md, md
