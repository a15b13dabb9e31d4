"""The plan is the run: what --infer-plan prints is what a run launches (argv, env, output paths), and the
plugin's options live beside a conftest that defines the same generic names."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from test_composability_check import _fake_matrices, needs_bench

pytest_plugins = ["pytester"]


def _ports_out(argv: list[str]) -> list[str]:
    """A launch takes free ports where the plan shows the fixed plan ports: compare without them."""
    return ["PORT" if i and argv[i - 1] == "--port" else a for i, a in enumerate(argv)]


@needs_bench
def test_the_plan_shows_what_a_run_launches_engine_args_included(pytester: pytest.Pytester) -> None:
    matrices = _fake_matrices(pytester.path / "m", opts=("fast",), levels="[1]", workload=", repeats: 2")
    reports = pytester.path / "r"
    args = ["--gpu", "cpu", "--suite", "composability", "--infer-matrices", str(matrices), "--infer-report-dir",
            str(reports), "-p", "no:cacheprovider", "--infer-engine-args", "--max-num-seqs 7"]
    plan = pytester.runpytest_subprocess(*args, "--infer-plan")
    assert plan.ret == pytest.ExitCode.OK, plan.stdout.str()
    entries = json.loads((reports / "cpu" / "plan.json").read_text())
    assert not (reports / "cpu" / "runs").exists()  # nothing launched
    run = pytester.runpytest_subprocess(*args)
    assert run.parseoutcomes().get("passed", 0) + run.parseoutcomes().get("skipped", 0) == 2, run.stdout.str()
    servers = [e for e in entries if e["nodes"]]
    assert {e["stack"] for e in servers} == {"cpu-fake-base", "cpu-fake-fast"}
    for e in servers:
        assert e["argv"][-2:] == ["--max-num-seqs", "7"], e
        log = reports / "cpu" / "runs" / e["stack"] / "logs" / f"{e['role']}.log"
        launched = shlex.split(log.read_text().splitlines()[0].removeprefix("$ "))
        assert _ports_out(launched) == _ports_out(e["argv"]), (launched, e["argv"])
    for e in (e for e in entries if e["role"] == "load"):  # the client writes where the plan says
        argv = e["argv"]
        result = Path(argv[argv.index("--result-dir") + 1]) / argv[argv.index("--result-filename") + 1]
        assert result.is_file(), result
        record = next((reports / "cpu" / "results").glob(f"{e['stack']}-*.json"))
        assert any((record.parent / lv["source"]).resolve() == result.resolve()
                   for lv in json.loads(record.read_text())["levels"])


def test_a_conftest_defining_model_keeps_it_and_the_plugin_answers_to_infer_model(
        pytester: pytest.Pytester) -> None:
    """argparse refuses a name defined twice: the plugin's old spellings give way to the user's."""
    pytester.makeconftest("""
        def pytest_addoption(parser):
            parser.addoption("--model", default="mine", help="the conftest's own model")
            parser.addoption("--engine", action="store_true", help="the conftest's own flag")

        def pytest_report_header(config):
            return f"conftest model={config.getoption('model')} engine={config.getoption('engine')}"
    """)
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "smoke", "--model", "theirs", "--engine",
                                           "--infer-model", "my-org/my-model", "--infer-engine", "vllm",
                                           "--stack", "base", "--infer-plan", "--infer-report-dir",
                                           str(pytester.path / "r"))
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(["conftest model=theirs engine=True"])
    entries = json.loads((pytester.path / "r" / "mi355x" / "plan.json").read_text())
    assert {e["stack"] for e in entries} == {"mi355x-vllm-base"}  # --stack: an old spelling nobody took
    server = next(e for e in entries if e["role"] == "server")
    assert "my-org/my-model" in server["argv"] and "theirs" not in server["argv"]
    # Without the conftest the old spellings are the plugin's own again.
    (pytester.path / "conftest.py").unlink()
    old = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "smoke", "--model", "my-org/my-model",
                                        "--engine", "vllm", "--stack", "base", "--infer-plan", "--report-dir",
                                        str(pytester.path / "r"))
    assert old.ret == pytest.ExitCode.OK, old.stderr.str()
    assert json.loads((pytester.path / "r" / "mi355x" / "plan.json").read_text()) == entries
