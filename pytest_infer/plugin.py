"""pytest hooks only. State lives in one InferSession in config.stash; the work is in the modules it calls.

Imports of the heavy parts (pydantic models, scipy, the engine) happen inside hooks, after options are
parsed, so `pytest --help` stays fast and a checkout's own tests run without any of it active.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_infer.session import InferSession

SUITES = ("composability", "conformance", "regression", "smoke")
session_key: pytest.StashKey[InferSession] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("infer", "pytest-infer: do inference optimizations still win when stacked?")
    g.addoption("--gpu", metavar="KIND", help="GPU kind to test (matrices/gpus.yaml), or cpu for the real "
                "vLLM CPU engine with the repo's tiny model. Turns the plugin on.")
    g.addoption("--suite", metavar="NAME", help=f"suite to run: {', '.join(SUITES)}")
    g.addoption("--engine", metavar="NAME", action="append", default=[],
                help="engine (repeatable); default: every engine the matrix supports on the GPU")
    g.addoption("--model", metavar="NAME", help="model from matrices/models.yaml, or a checkpoint path or id")
    g.addoption("--stack", metavar="EXPR", action="append", default=[],
                help="narrow to stacks: a label (fp4+mtp, base) or an expression (mtp and not disagg); repeatable")
    g.addoption("--report-dir", metavar="DIR", default="reports",
                help="where matrices, plots, JUnit and results go (default: reports/)")
    g.addoption("--infer-plan", action="store_true",
                help="launch nothing: print every role's argv and env, and write <report-dir>/<gpu>/plan.json")
    g.addoption("--results", metavar="DIR", help="replay, no engine: run the checks on a results store, or on "
                "InferenceX / vllm bench / SGLang result files under DIR (raw ones need an infer-results.yaml)")
    g.addoption("--infer-matrices", metavar="DIR",
                help="use this matrices/ directory instead of the shipped one (your own GPUs, engines, optimizations)")
    g.addoption("--infer-fresh", action="store_true", help="measure again even if results are stored")
    g.addoption("--baseline-dir", metavar="DIR",
                help="regression suite: where baselines live (default: baselines/ in the rootdir)")
    g.addoption("--baseline-update", action="store_true",
                help="regression suite: measure and (re)write the baselines instead of comparing")
    g.addoption("--baseline-strict", action="store_true",
                help="regression suite: a missing baseline or one from another environment fails (default: skip)")
    g.addoption("--infer-engine-args", metavar="ARGS",
                help="flags appended to every serving role, e.g. '--max-num-seqs 4' (part of what is measured)")
    g.addoption("--infer-repeats", metavar="N", type=int,
                help="sweeps per deployment, overriding the workload's repeats (an inconclusive verdict says "
                     "how many would decide it); stored sweeps are kept and only the missing ones measured")
    g.addoption("--infer-devices", metavar="IDS",
                help="device ids to lease deployments from (default: CUDA/HIP/ROCR_VISIBLE_DEVICES, else all "
                     "detected; the cores on cpu)")
    g.addoption("--infer-lease-dir", metavar="DIR",
                help="where the per-device lease locks live (default: one directory per user in the temp dir)")
    g.addoption("--infer-launch-timeout", metavar="S", type=float, default=900.0,
                help="seconds a deployment may take to become healthy (default 900)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("gpu") is None:
        if config.getoption("suite") or config.getoption("engine") or config.getoption("infer_plan"):
            raise pytest.UsageError("pytest-infer: --suite, --engine and --infer-plan need --gpu KIND")
        return
    from pytest_infer.session import InferSession

    infer = InferSession.from_config(config)  # raises pytest.UsageError on bad input: exit code 4
    config.stash[session_key] = infer
    config.pluginmanager.register(infer, "infer-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    infer = config.stash.get(session_key, None)
    if infer is not None:
        config.pluginmanager.unregister(infer)
        del config.stash[session_key]


@pytest.fixture(scope="session")
def infer(request: pytest.FixtureRequest) -> InferSession:
    """The run's state: matrix, results store, measurements and verdicts."""
    session = request.config.stash.get(session_key, None)
    if session is None:
        pytest.skip("pytest-infer is off: pass --gpu KIND")
    return session
