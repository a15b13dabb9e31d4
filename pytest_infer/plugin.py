"""pytest hooks only. State lives in one InferSession in config.stash; the work is in the objects it holds.

Imports of the heavy parts (pydantic models, scipy, the engine) happen inside hooks, after options are
parsed, so `pytest --help` stays fast and a checkout's own tests run without any of it active.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import pytest

from pytest_infer.options import add_legacy_spellings, add_options

if TYPE_CHECKING:
    from pytest_infer.session import InferSession
    from pytest_infer.space import Stack

session_key: pytest.StashKey[InferSession] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> Generator[None, None, None]:
    yield  # the conftests' own options first: a name they define stays theirs
    add_legacy_spellings(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("gpu") is None:
        if config.getoption("suite") or config.getoption("infer_engine") or config.getoption("infer_plan") \
                or getattr(config.option, "infer_legacy_engine", None):
            raise pytest.UsageError("pytest-infer: --suite, --engine and --infer-plan need --gpu KIND")
        return
    if config.getoption("infer_plan") and getattr(config.option, "dist", "no") != "no":
        # A plan launches nothing: one process writes it (xdist's controller collects nothing to plan).
        config.option.dist, config.option.tx = "no", []
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
    """The run's state: its options, selection, lab, suite and rows."""
    session = request.config.stash.get(session_key, None)
    if session is None:
        pytest.skip("pytest-infer is off: pass --gpu KIND")
    return session


@pytest.fixture
def infer_check(infer: InferSession, request: pytest.FixtureRequest) -> Callable[[Stack], None]:
    """Runs the suite's check of a stack in this test: records its row, then passes, fails or skips."""
    return lambda stack: infer.suite.run_test(request.node, stack)
