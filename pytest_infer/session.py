"""The run's one plugin object (kept in config.stash): it routes pytest's hooks to the objects that do
the work -- the selection (which stacks, which marks), the lab (runners, leases, interleaving), the
suite (the check, its report) and the rows (what the reports read)."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_infer.lab import Lab
from pytest_infer.options import Options
from pytest_infer.report.markdown import summary_lines
from pytest_infer.report.plan import plan_entries, write_batch_scripts, write_plan
from pytest_infer.report.rows import Rows
from pytest_infer.run import Run, usage
from pytest_infer.selection import Selection
from pytest_infer.suite import DEFAULT, REGISTRY, tests_of
from pytest_infer.suite.base import Suite


def suite_class(name: str) -> type[Suite]:
    module, cls = REGISTRY[name].split(":")
    got: type[Suite] = getattr(importlib.import_module(module), cls)
    return got


class InferSession:
    def __init__(self, config: pytest.Config, run: Run, suite: Suite) -> None:
        self.config = config
        self.run = run
        self.suite = suite
        self.selection = suite.selection
        self.lab = suite.lab
        self.rows = Rows()
        self.started = time.monotonic()
        self.matrix_path: str | None = None
        self.view_lines: list[str] = []

    @classmethod
    def from_config(cls, config: pytest.Config) -> InferSession:
        """Raises pytest.UsageError (exit code 4) on any bad input, before anything is collected."""
        options = Options.from_config(config)
        name = options.suite or DEFAULT
        kind = suite_class(name)
        run = Run.resolve(options, name, kind.default_stacks)
        replayed = kind.replayed(run)
        if options.suite is not None:
            tests = tests_of(name)
            if tests is None:
                raise usage(f"suite {name!r} has no tests in this version yet")
            if config.args_source != pytest.Config.ArgsSource.ARGS:
                config.args = [str(tests)]
            if not config.option.xmlpath and not config.getoption("collectonly"):
                config.option.xmlpath = str(run.paths.junit(name))
        selection = Selection(run, replayed)
        lab = Lab(run, selection, _live_log(config), fresh=kind.fresh, with_parts=kind.with_parts)
        return cls(config, run, kind(run, selection, lab))

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        run = self.run
        lines = [f"pytest-infer: {run.gpu}, engines {', '.join(run.engines)}, model {run.model}"]
        if run.model not in run.matrix.models and not Path(run.model).expanduser().is_dir():
            lines.append(f"pytest-infer: model {run.model!r} is not in {run.matrix.root / 'models.yaml'} and not a "
                         f"directory here: taken as a hub id, the same checkpoint for every precision")
        return lines

    # ---- collection ---------------------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "stack" in metafunc.fixturenames:
            metafunc.parametrize("stack", [self.selection.param(s, self.suite.unaffected_by)
                                           for s in self.selection.stacks])

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        keep, drop = self.selection.split(items)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selection.plan(session.items)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if not self.run.options.plan:
            return None
        entries = plan_entries(self.selection.planned, self.selection, self.lab, self.suite.plan_client)
        tw = self.config.get_terminal_writer()
        write_plan(entries, self.run.paths.plan, tw)
        if self.run.options.slurm is not None:
            folder = self.run.paths.plan.parent / "slurm"
            scripts = write_batch_scripts(self.selection.planned, self.selection, self.lab, folder)
            tw.line(f"plan: {len(scripts)} Slurm batch script(s) written to {folder}")
        return True

    # ---- results ------------------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.rows.add(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.lab.close()
        if self.run.options.xdist_worker or self.run.options.plan or not self.rows:
            return
        rows = self.rows.in_order(self.selection.report_order())
        path = self.suite.report(rows)
        self.matrix_path = str(path)
        from pytest_infer.history.view import VendorView
        from pytest_infer.report.html import write_html

        try:  # the pages read from the history must not cost the run its verdicts and its matrix
            self.view_lines = VendorView(self.run, {s.id: s for s in self.selection.stacks}).write(rows)
            page = write_html(self.run.paths.report_dir, f"pytest-infer: {self.run.gpu}"
                              + (" (replayed)" if self.run.replay else ""))
            self.view_lines.append(f"html: {page}")
        except Exception as exc:  # a bug of ours: said in one line with its type, the run's own reports stand
            self.view_lines.append(f"history/trends/html: not written: {type(exc).__name__}: {exc}")
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:  # GitHub Actions shows it on the run's page
            with open(summary, "a") as fh:
                fh.write(path.read_text() + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.matrix_path is None:
            return
        terminalreporter.section("pytest-infer")
        for line in summary_lines(self.rows.in_order(self.selection.report_order())):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"matrix: {self.matrix_path}")
        for line in self.view_lines:
            terminalreporter.write_line(line)
        if self.config.option.xmlpath:
            terminalreporter.write_line(f"junit: {self.config.option.xmlpath}")
        terminalreporter.write_line(f"wall time: {time.monotonic() - self.started:.0f} s")


def _live_log(config: pytest.Config) -> Any:
    """Live progress lines (a sweep takes minutes), past pytest's output capture."""
    def log(msg: str) -> None:
        # Looked up when used: the terminal reporter registers after this plugin's (tryfirst) configure.
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(msg)
        else:
            reporter.write_line(msg)

    return log
