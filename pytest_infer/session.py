"""The run's one state object (kept in config.stash, registered as a plugin for its own hooks)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_infer.analysis.checks import Stats, Verdict, acceptance_collapse, composability
from pytest_infer.analysis.curve import Sweeps
from pytest_infer.matrix import KnownBroken, Matrix, MatrixError, default_root
from pytest_infer.measure.results import Measurement
from pytest_infer.measure.runner import MeasurementFailed, Runner, failure_of
from pytest_infer.measure.smoke import SmokeResult
from pytest_infer.measure.store import Store
from pytest_infer.plugin import SUITES
from pytest_infer.space import Stack, all_stacks, matches

if TYPE_CHECKING:
    from pytest_infer.launch.leases import DevicePool
    from pytest_infer.regression import Outcome

PROPERTY = "infer"  # user_property carrying a stack's row for the reports (travels under xdist too)


def _usage(msg: str) -> pytest.UsageError:
    return pytest.UsageError(f"pytest-infer: {msg}")


def suite_dir(name: str) -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "suites" / name, here.parent / "suites" / name):
        if candidate.is_dir():
            return candidate
    ready = [s for s in SUITES if (here / "suites" / s).is_dir() or (here.parent / "suites" / s).is_dir()]
    raise _usage(f"suite {name!r} has no tests in this version yet; available: {', '.join(ready)}")


def engine_version(matrix: Matrix, engine: str) -> str | None:
    for dist in matrix.engines[engine].package:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _applies(kb: KnownBroken, version: str | None) -> bool:
    if not kb.versions or version is None:
        return True  # no engine here to ask (a plan, a replay): assume the registry holds
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return Version(version.split("+")[0]) in SpecifierSet(kb.versions)


@dataclass
class Row:
    """One stack's line in the composability matrix, built from test reports on the controller."""

    stack: str
    outcome: str = "not run"
    verdict: str = ""
    detail: str = ""
    props: dict[str, Any] = field(default_factory=dict)


class InferSession:
    def __init__(self, config: pytest.Config, matrix: Matrix, gpu: str, engines: list[str], model: str,
                 stack_exprs: list[str], report_dir: Path, replayed: list[Stack] | None = None) -> None:
        self.config = config
        self.matrix = matrix
        self.gpu = gpu
        self.engines = engines
        self.model = model
        self.stack_exprs = stack_exprs
        self.report_dir = report_dir  # <report-dir>/<gpu>
        self.suite: str | None = config.getoption("suite")
        self.versions = {e: engine_version(matrix, e) for e in engines}
        # --results on results measured elsewhere: only the stacks (and variants) they hold.
        self.replayed = replayed
        self.stacks = replayed if replayed is not None else [
            s for e in engines for s in all_stacks(gpu, e, list(matrix.optimizations))]
        self.rows: dict[str, Row] = {}
        self.started = time.monotonic()
        # xdist workers share the controller's testrunuid; a plain run makes its own.
        workerinput = getattr(config, "workerinput", None)
        self.run_id = str(workerinput["testrunuid"]) if workerinput else uuid.uuid4().hex
        self._runners: dict[str, Runner] = {}
        self.planned: list[Stack] = []  # the stacks of the collected items (after deselection)
        self._smoke_failures: dict[str, str] = {}  # stack id -> first line of why its smoke test failed

    # ---- construction: every bad input is one line and exit code 4 ------------------------------
    @classmethod
    def from_config(cls, config: pytest.Config) -> InferSession:
        try:
            custom = config.getoption("infer_matrices")
            matrix = Matrix(Path(custom) if custom else default_root())
        except MatrixError as exc:
            raise _usage(str(exc)) from None
        repeats = config.getoption("infer_repeats")
        if repeats is not None:
            if repeats < 2:
                raise _usage(f"--infer-repeats {repeats}: at least 2 (an interval needs two sweeps per side)")
            matrix.workloads = {k: w.model_copy(update={"repeats": repeats}) for k, w in matrix.workloads.items()}
        gpu = config.getoption("gpu")
        if gpu not in matrix.gpus:
            raise _usage(f"unknown GPU kind {gpu!r}; valid: {', '.join(matrix.gpus)}")
        suite = config.getoption("suite")
        if suite is not None and suite not in SUITES:
            raise _usage(f"unknown suite {suite!r}; valid: {', '.join(SUITES)}")
        supported = matrix.engines_for(gpu)
        engines = config.getoption("engine") or supported
        for e in engines:
            if e not in supported:
                raise _usage(f"unknown engine {e!r} for {gpu}; valid: {', '.join(supported)}")
        model = config.getoption("model") or matrix.model_defaults[gpu].model
        exprs = config.getoption("stack")
        if not exprs and suite == "regression" and gpu in matrix.thresholds.regression_stacks:
            from pytest_infer.regression import default_scope

            try:  # the suite's default scope on this GPU kind
                exprs = [default_scope(matrix.thresholds.regression_stacks[gpu], list(matrix.optimizations))]
            except ValueError as exc:
                raise _usage(f"{matrix.root / 'workloads.yaml'}: thresholds.regression_stacks.{gpu}: {exc}") from None
        probe = Stack(gpu, engines[0], tuple(matrix.optimizations))
        for expr in exprs:
            try:
                matches(probe, expr, list(matrix.optimizations))
            except (ValueError, SyntaxError) as exc:
                raise _usage(f"--stack {expr!r}: {exc}") from None
        report_dir = Path(config.getoption("report_dir")).resolve() / gpu
        if config.getoption("infer_engine_args"):
            from pytest_infer.engines import parse_engine_args

            try:
                parse_engine_args(config.getoption("infer_engine_args"), list(engines))
            except ValueError as exc:
                raise _usage(str(exc)) from None
        from pytest_infer.launch.leases import LeaseError, device_pool

        try:  # a bad --infer-devices or *_VISIBLE_DEVICES is a usage error before anything runs
            device_pool(matrix.gpus[gpu].vendor, config.getoption("infer_devices"), 0)
        except LeaseError as exc:
            raise _usage(str(exc)) from None
        replayed = cls._replayed(config, matrix, gpu, list(engines), report_dir)
        if suite is not None and config.args_source != pytest.Config.ArgsSource.ARGS:
            config.args = [str(suite_dir(suite))]
        if suite is not None and not config.option.xmlpath and not config.getoption("collectonly"):
            config.option.xmlpath = str(report_dir / f"junit-{suite}.xml")
        return cls(config, matrix, gpu, list(engines), model, exprs, report_dir, replayed)

    @staticmethod
    def _replayed(config: pytest.Config, matrix: Matrix, gpu: str, engines: list[str],
                  report_dir: Path) -> list[Stack] | None:
        """--results DIR of foreign result files: ingested into <report-dir>/<gpu>/replayed/, the stacks
        they hold. None for no --results, or for a plain store (replayed as it is)."""
        results = config.getoption("results")
        if results is None:
            return None
        from pytest_infer.measure.replay import ReplayError, is_store, replay_store

        root = Path(results).resolve()
        if not root.is_dir():
            raise _usage(f"--results {results}: not a directory")
        if config.getoption("suite") == "conformance":  # accuracy: a store, or published score rows
            from pytest_infer.conformance import ConformanceError, replayed_stacks

            try:
                return replayed_stacks(root, list(matrix.gpus), list(matrix.optimizations), gpu,
                                       config.getoption("engine") or None)
            except ConformanceError as exc:
                raise _usage(str(exc)) from None
        if is_store(root):
            return None
        try:
            return replay_store(root, matrix, gpu, engines, report_dir / "replayed")
        except ReplayError as exc:
            raise _usage(str(exc)) from None

    # ---- stacks ---------------------------------------------------------------------------------
    def selected(self, stack: Stack) -> bool:
        return all(matches(stack, e, list(self.matrix.optimizations)) for e in self.stack_exprs)

    def unsupported(self, stack: Stack) -> str | None:
        if self.replayed is not None and stack not in self.replayed:  # a part the results do not hold
            return f"not in the results replayed ({self.config.getoption('results')})"
        if stack.engine not in self.matrix.engines:  # replayed accuracy rows of an engine the matrices lack
            return None
        return self.matrix.unsupported_reason(stack.engine, stack.gpu, stack.opts)

    def known_broken(self, stack: Stack) -> KnownBroken | None:
        version = self.versions.get(stack.engine)
        for kb in self.matrix.known_broken_for(stack.engine, stack.gpu):
            if matches(stack, kb.stack, list(self.matrix.optimizations)) and _applies(kb, version):
                return kb
        return None

    def param(self, stack: Stack) -> Any:
        marks: list[pytest.MarkDecorator] = []
        why = self.unsupported(stack)
        if why:
            marks.append(pytest.mark.skip(reason=f"unsupported: {why}"))
        else:
            kb = self.known_broken(stack)
            # A silent loss is expected only by the suite that measures it: a known slowdown still has to
            # give right answers (conformance), a known accuracy loss still has to be fast, and both start.
            ignored = {"conformance": ("silent performance",), "smoke": ("silent performance", "silent accuracy")}
            if kb is not None and kb.kind not in ignored.get(self.suite or "", ("silent accuracy",)):
                marks.append(pytest.mark.xfail(strict=True, reason=f"known broken ({kb.kind}): {kb.failure} "
                                               f"[{kb.issue}]"))
        return pytest.param(stack, id=stack.id, marks=marks)

    # ---- measurement ----------------------------------------------------------------------------
    def runner(self, engine: str) -> Runner:
        if engine not in self._runners:
            results = self.config.getoption("results")
            root = (self.report_dir / "replayed" if self.replayed is not None else
                    Path(results).resolve() if results else self.report_dir / "results")
            store = Store(root, read_only=bool(results))
            local, fingerprint = self._local_models()
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            capture = self.config.pluginmanager.get_plugin("capturemanager")

            def log(msg: str) -> None:
                # Live progress (a sweep takes minutes), past pytest's output capture.
                if reporter is None:
                    return
                if capture is not None:
                    with capture.global_and_fixture_disabled():
                        reporter.write_line(msg)
                else:
                    reporter.write_line(msg)

            from pytest_infer.engines import parse_engine_args
            from pytest_infer.launch.gpus import device_fingerprint

            extra = self.config.getoption("infer_engine_args")
            kind = self.matrix.gpus[self.gpu]
            self._runners[engine] = Runner(
                matrix=self.matrix, store=store, run_root=self.report_dir / "runs", model=self.model,
                engine_version=self.versions.get(engine) or "unknown", local_models=local,
                model_fingerprint=fingerprint, launch_timeout_s=self.config.getoption("infer_launch_timeout"),
                replay=bool(results), log=log, run_id=self.run_id,
                # A regression run measures anew: a stored sweep from another session is what it checks.
                fresh=self.config.getoption("infer_fresh") or self.suite == "regression",
                extra_args=parse_engine_args(extra, [engine]) if extra else (),
                pool=None if results else self.device_pool(), host_devices=kind.host_devices,
                device="" if results else device_fingerprint(kind.vendor))
        return self._runners[engine]

    def device_pool(self) -> DevicePool:
        from pytest_infer.launch.gpus import visible_devices
        from pytest_infer.launch.leases import DevicePool, LeaseError, default_lock_dir, device_pool

        vendor = self.matrix.gpus[self.gpu].vendor
        try:
            ids, _ = device_pool(vendor, self.config.getoption("infer_devices"),
                                 0 if vendor == "cpu" else visible_devices(vendor)[0])
        except LeaseError as exc:
            raise _usage(str(exc)) from None
        lock_dir = self.config.getoption("infer_lease_dir")
        return DevicePool(ids, Path(lock_dir).resolve() if lock_dir else default_lock_dir(), vendor)

    def model_dir(self, name: str) -> Path:
        return Path(self.config.getoption("report_dir")).resolve() / "models" / name

    def _local_models(self, build: bool = True) -> tuple[dict[str, str], str]:
        """Models the repo builds itself (no download): name -> directory, built on first use."""
        spec = self.matrix.models.get(self.model)
        if spec is None or spec.builder is None:
            return {}, self.model
        out = self.model_dir(self.model)
        if not build or self.config.getoption("results"):
            return {self.model: str(out)}, self.model
        import importlib

        builder = importlib.import_module(spec.builder)
        builder.build_tiny_model(out)
        return {self.model: str(out)}, str(builder.model_fingerprint(out))

    def smoke(self, stack: Stack) -> SmokeResult:
        """One launch, one greedy completion (no sweep, nothing stored)."""
        from pytest_infer.measure.runner import smoke

        self.fail_fast_on_broken_part(stack, lambda part: self._smoke_failures.get(part.id))
        try:
            return smoke(self.runner(stack.engine), stack)
        except MeasurementFailed as exc:
            self._smoke_failures[stack.id] = str(exc).splitlines()[0]
            raise

    def measure(self, stack: Stack) -> Measurement:
        runner = self.runner(stack.engine)
        if self.matrix.workload(self.gpu).interleave and not runner.replay:
            group = self.interleaved_group(stack)
            if stack in group:
                runner.measure_together(group)
        return runner.measure(stack)

    def interleaved_group(self, stack: Stack) -> list[Stack]:
        """What this run measures on the stack's engine, to be measured together (Workload.interleave):
        the collected stacks and, for composability, their parts; not the unsupported or known-broken
        ones (they run alone, and fail alone). The same list on every xdist worker."""
        def ok(s: Stack) -> bool:
            return s.engine == stack.engine and not self.unsupported(s) and self.known_broken(s) is None

        group = [s for s in self.planned if ok(s)]
        if self.suite != "regression":
            group += [p for s in group for p in s.parts() if ok(p)]
        return sorted(set(group), key=lambda s: (len(s.opts), s.id))

    @staticmethod
    def sweeps(m: Measurement, name: str) -> Sweeps:
        return Sweeps.from_records(name, (lv.model_dump() for lv in m.levels))

    @property
    def regression_stats(self) -> Stats:
        t, w = self.matrix.thresholds, self.matrix.workload(self.gpu)
        return Stats(self.matrix.margins(self.gpu)[1], t.confidence, t.bootstrap_from, w.session_noise)

    def regression(self, stack: Stack) -> Outcome:
        from pytest_infer.regression import check

        return check(self, stack)

    @property
    def stats(self) -> Stats:
        t, w = self.matrix.thresholds, self.matrix.workload(self.gpu)
        return Stats(self.matrix.margins(self.gpu)[0], t.confidence, t.bootstrap_from, w.session_noise)

    def composability(self, stack: Stack) -> tuple[Verdict, Measurement]:
        """The stack against the best of its measurable parts at matched interactivity."""
        self.fail_fast_on_broken_part(stack, failure_of(self.measure))
        m = self.measure(stack)
        if not stack.opts:
            return Verdict(stack.id, "composability", "pass", self.stats.tolerance,
                           f"reference measured: {len(m.levels)} level(s) over {len(m.sweeps())} repeat(s)"), m
        parts, notes, measured = [], [], {}
        for part in stack.parts():
            if self.unsupported(part):
                continue
            try:
                measured[part.label] = pm = self.measure(part)
                parts.append(self.sweeps(pm, part.label))
            except MeasurementFailed as exc:
                notes.append(f"part {part.label} could not be measured: {str(exc).splitlines()[0]}")
        verdict = composability(self.sweeps(m, stack.label), parts, self.stats)
        verdict.stack = stack.id
        collapse = self._mtp_collapse(stack, m, measured.get("mtp"))
        if collapse:
            verdict.verdict = "fail"
            verdict.message = f"{collapse}; throughput: {verdict.message}"
        if notes:
            verdict.message += "\n" + "\n".join(notes)
        return verdict, m

    def _mtp_collapse(self, stack: Stack, m: Measurement, mtp: Measurement | None) -> str | None:
        """MTP's acceptance rate in the stack against MTP alone, from the scraped engine metrics."""
        if "mtp" not in stack.opts or stack.opts == ("mtp",) or mtp is None:
            return None
        rate, alone = acceptance(m), acceptance(mtp)
        if rate is None or alone is None:
            return None
        return acceptance_collapse(stack.id, rate, alone, self.matrix.thresholds.mtp_acceptance_collapse)

    def fail_fast_on_broken_part(self, stack: Stack, failure_of: Callable[[Stack], str | None]) -> None:
        """A known-broken stack whose smaller part fails under the same registry entry is not launched:
        the part's failure (seen this session) is the evidence. When upstream fixes it, the part
        XPASSes first and the registry gets updated, then the bigger stacks run again."""
        kb = self.known_broken(stack)
        if kb is None:
            return
        for part in stack.parts():
            if self.known_broken(part) != kb or self.unsupported(part):
                continue
            why = failure_of(part)
            if why:
                raise MeasurementFailed(f"not launched: its part {part.id} fails under the same known-broken "
                                        f"entry [{kb.issue}]: {why}")

    def record(self, item: pytest.Item, stack: Stack, verdict: Verdict | None, m: Measurement | None,
               message: str = "") -> None:
        """Numbers on the test report: JUnit properties and the markdown row (also under xdist)."""
        row: dict[str, Any] = {"stack": stack.id}
        if message:  # why it failed, or what a check without a verdict saw
            row["message"] = message
        if m is not None:
            row.update(gpus=m.gpus, launch_s=round(m.launch_s, 1), levels=[
                {"concurrency": lv.concurrency, "repeat": lv.repeat, "interactivity": round(lv.interactivity, 2),
                 "per_gpu_throughput": round(lv.per_gpu_throughput, 1),
                 "per_decode_gpu_output_throughput": round(lv.per_decode_gpu_output_throughput, 1),
                 "median_ttft_ms": round(lv.median_ttft_ms, 1), **({"metrics": lv.metrics} if lv.metrics else {})}
                for lv in m.levels], decode_gpus=m.decode_gpus)
        if m is not None and (rate := acceptance(m)) is not None:
            row["mtp_acceptance_rate"] = round(rate, 4)
        if verdict is not None:
            row.update(verdict=verdict.verdict, message=verdict.message, tolerance=verdict.tolerance)
            if verdict.repeats_needed:
                row["repeats_needed"] = verdict.repeats_needed
            worst = verdict.worst
            if worst is not None:
                row.update(worst_ratio=round(worst.ratio, 4), worst_low=round(worst.interval.low, 4),
                           worst_high=round(worst.interval.high, 4), interval_method=worst.interval.method,
                           worst_interactivity=round(worst.interactivity, 2),
                           best_part=worst.part, stack_throughput=round(worst.stack_throughput, 1),
                           part_throughput=round(worst.part_throughput, 1),
                           ratios={f"{lc.interactivity:.2f}": round(lc.ratio, 4) for lc in verdict.levels},
                           intervals={f"{lc.interactivity:.2f}": [round(lc.interval.low, 4), round(lc.interval.high, 4)]
                                      for lc in verdict.levels})
        if m is not None and m.warnings:  # replayed levels that may flatter the stack (failed requests)
            row["warnings"] = m.warnings
        item.user_properties.append((PROPERTY, json.dumps(row)))
        for k in ("verdict", "worst_ratio", "worst_low", "worst_high", "worst_interactivity", "best_part",
                  "stack_throughput", "part_throughput", "mtp_acceptance_rate", "repeats_needed"):
            if k in row:
                item.user_properties.append((k, row[k]))

    # ---- hooks (this object is registered as a plugin) -------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "stack" in metafunc.fixturenames:
            metafunc.parametrize("stack", [self.param(s) for s in self.stacks])

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not self.stack_exprs:
            return
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            stack = _stack_of(item)
            (keep if stack is None or self.selected(stack) else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.planned = list(dict.fromkeys(s for s in map(_stack_of, session.items) if s is not None))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if not self.config.getoption("infer_plan"):
            return None
        from pytest_infer.report.plan import write_plan

        stacks = list(dict.fromkeys(s for s in map(_stack_of, session.items) if s is not None))
        write_plan(self, stacks, self.config.get_terminal_writer())
        return True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        stack_id = _stack_id_of(report.nodeid)
        if stack_id is None:
            return
        row = self.rows.setdefault(stack_id, Row(stack_id))
        for name, value in report.user_properties:
            if name == PROPERTY:
                row.props = json.loads(str(value))
        if report.skipped and hasattr(report, "wasxfail"):
            row.outcome, row.detail = "xfail", str(report.wasxfail)
            if row.props.get("message"):
                row.detail += f" (seen: {str(row.props['message']).splitlines()[0]})"
        elif report.skipped:
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            row.outcome, row.detail = "skipped", reason.removeprefix("Skipped: ")
        elif report.when == "call" and report.passed and hasattr(report, "wasxfail"):
            row.outcome, row.detail = "XPASS", f"known-broken entry no longer fails: {report.wasxfail}"
        elif report.failed:
            row.outcome = "XPASS(strict)" if "XPASS(strict)" in str(report.longrepr) else "failed"
            row.detail = str(row.props.get("message") or _first_line(report.longreprtext))
        elif report.when == "call" and report.passed:
            row.outcome, row.detail = "passed", str(row.props.get("message", ""))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for runner in self._runners.values():
            runner.close()
        if hasattr(self.config, "workerinput") or self.config.getoption("infer_plan") or not self.rows:
            return
        from pytest_infer.report.markdown import write_matrix
        from pytest_infer.report.plots import write_plots

        suite = self.suite or "composability"
        plots = write_plots(self, suite) if suite == "composability" else []
        self.matrix_path = write_matrix(self, plots)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:  # GitHub Actions shows it on the run's page
            with open(summary, "a") as fh:
                fh.write(self.matrix_path.read_text() + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        path = getattr(self, "matrix_path", None)
        if path is None:
            return
        from pytest_infer.report.markdown import summary_lines

        terminalreporter.section("pytest-infer")
        for line in summary_lines(self):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"matrix: {path}")
        if self.config.option.xmlpath:
            terminalreporter.write_line(f"junit: {self.config.option.xmlpath}")
        terminalreporter.write_line(f"wall time: {time.monotonic() - self.started:.0f} s")


def acceptance(m: Measurement) -> float | None:
    """Speculative-decoding acceptance over every level and role of a measurement."""
    from pytest_infer.measure.metrics import pooled_acceptance

    return pooled_acceptance(lv.metrics for lv in m.levels)


def _first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("E ")]
    return (lines[0].strip()[2:].strip() if lines else text.strip().splitlines()[-1] if text.strip() else "")


def _stack_of(item: pytest.Item) -> Stack | None:
    callspec = getattr(item, "callspec", None)
    stack = callspec.params.get("stack") if callspec is not None else None
    return stack if isinstance(stack, Stack) else None


def _stack_id_of(nodeid: str) -> str | None:
    if "[" not in nodeid:
        return None
    return nodeid.rsplit("[", 1)[1].rstrip("]")
