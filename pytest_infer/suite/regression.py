"""Regression: is each stack still as fast as its stored baseline?

`--baseline-update` measures every stack and writes baselines/<gpu>/<engine>/<model>/<stack>.yaml; without
it each stack is measured anew and compared per matched interactivity level, with the same intervals as
composability. A missing baseline, or one from another environment, is found before anything is launched:
a skip with the reason (a failure with --baseline-strict).
"""

from __future__ import annotations

from pathlib import Path

from pytest_infer.analysis.checks import regression
from pytest_infer.analysis.curve import Point, Sweeps
from pytest_infer.matrix import Matrix
from pytest_infer.measure.runner import MeasurementFailed
from pytest_infer.report import markdown
from pytest_infer.report.rows import Row
from pytest_infer.run import usage
from pytest_infer.space import BASE, Stack, parse_label
from pytest_infer.store import baselines
from pytest_infer.store.baselines import BaselineError
from pytest_infer.store.records import Measurement
from pytest_infer.suite.base import (
    DataProblems,
    Result,
    Suite,
    measured_row,
    outcome_of,
    with_problems,
    with_verdict,
)
from pytest_infer.suite.composability import sweeps


def default_scope(labels: list[str], optimizations: list[str]) -> str:
    """Stack labels as one --stack expression (a label alone means exactly that set; in an expression a
    name means "has it", so each label becomes "has these and none of the others")."""
    terms = []
    for label in labels:
        opts = parse_label(label, optimizations)
        terms.append(BASE if not opts else "(" + " and ".join(o if o in opts else f"not {o}" for o in optimizations)
                     + ")")
    if not terms:
        raise ValueError("an empty list: omit the GPU kind to cover every stack")
    return " or ".join(terms)


def sweeps_of(b: baselines.Baseline) -> Sweeps:
    return Sweeps.from_levels("baseline", [(lv.repeat, lv.concurrency, Point(lv.interactivity, lv.per_gpu_throughput))
                                           for lv in b.levels])


class Regression(Suite):
    name = "regression"
    with_parts = False  # the baseline is the only reference
    fresh = True  # a stored sweep from another session is what it checks against, not a result

    @classmethod
    def default_stacks(cls, matrix: Matrix, gpu: str) -> list[str]:
        """thresholds.regression_stacks: the stacks it covers by default on this GPU kind."""
        labels = matrix.thresholds.regression_stacks.get(gpu)
        if labels is None:
            return []
        try:
            return [default_scope(labels, list(matrix.optimizations))]
        except ValueError as exc:
            raise usage(f"{matrix.root / 'workloads.yaml'}: thresholds.regression_stacks.{gpu}: {exc}") from None

    def errors(self) -> tuple[type[Exception], ...]:
        return (MeasurementFailed, BaselineError)

    def failed_words(self, exc: Exception) -> str:
        return "broken baseline" if isinstance(exc, BaselineError) else super().failed_words(exc)

    def check(self, stack: Stack) -> Result:
        """Write the stack's baseline (--baseline-update), or measure it anew and compare."""
        run, opts = self.run, self.run.options
        path = baselines.path_for(opts.baseline_dir, stack.gpu, stack.engine, run.model, stack.label)
        where = opts.relative(path)
        if opts.baseline_update:
            new = self.lab.measure(stack)
            baselines.write(path, baselines.from_measurement(new, run.run_id))
            message = (f"baseline written: {where} ({len(new.levels)} level(s) over {len(new.sweeps())} "
                       f"repeat(s))")
            return Result("pass", message, measured_row(stack, new, message))
        base = baselines.load(path)  # BaselineError: the test fails with its one line
        if base is None:
            return self._unjudged(stack, f"no baseline for {stack.id} at {where}; record one with --baseline-update")
        # Replayed results carry their own environment; a live run's is known before launching anything.
        m = self.lab.measure(stack) if run.replay else None
        # The workload is judged on the stored workload itself, not the hash written with it: a field added
        # to Workload later (read back with its default) must not orphan every existing baseline.
        stored = base.fingerprint.model_copy(update={"workload": baselines.workload_hash(base.workload)})
        blocking, notes = baselines.compare_environments(
            stored, baselines.fingerprint_of(m) if m is not None else self.expected_fingerprint(stack))
        if blocking:
            return self._unjudged(stack, f"baseline {where} is from another environment: {'; '.join(blocking)}; "
                                  f"re-record it with --baseline-update", m)
        m = m if m is not None else self.lab.measure(stack)
        mine, own = sweeps(m, stack.label), DataProblems.of(m)
        if mine is None:
            return Result("fail", own.describe(stack.id) + "; no level counts, nothing to compare",
                          measured_row(stack, m))
        verdict = regression(mine, sweeps_of(base), run.stats(regression=True))
        verdict.stack = stack.id
        verdict = with_problems(verdict, own, [])
        changes = baselines.flag_changes(base.argv, m.argv)
        extra = ([f"flags changed since the baseline: {'; '.join(changes)}"] if changes else []) + \
                ([f"environment: {'; '.join(notes)}"] if notes else [])
        if extra:
            verdict.message += "\n" + "\n".join(extra)
        return Result(outcome_of(verdict), verdict.message, with_verdict(measured_row(stack, m), verdict))

    def _unjudged(self, stack: Stack, message: str, m: Measurement | None = None) -> Result:
        """No baseline to compare with: a skip, or a failure with --baseline-strict."""
        row = measured_row(stack, m, message)
        return Result("fail" if self.run.options.baseline_strict else "skip", message, row)

    def expected_fingerprint(self, stack: Stack) -> baselines.Fingerprint:
        """The environment a measurement taken now would carry (nothing launched)."""
        r = self.lab.runner(stack.engine)
        return baselines.Fingerprint(engine=stack.engine, engine_version=r.engine_version, device=r.device or "unknown",
                                     plugin_version=baselines.plugin_version(),
                                     workload=baselines.workload_hash(self.run.workload),
                                     model=r.model_fingerprint or r.model)

    def report(self, rows: list[Row]) -> Path:
        run, st, opts = self.run, self.run.stats(regression=True), self.run.options
        noise = (f" (intervals include a between-session noise of {st.session_noise:.0%}, log-SD, from an A/A "
                 f"calibration)" if st.session_noise else "")
        intro = (f"Each stack measured anew and compared with its baseline in `{opts.relative(opts.baseline_dir)}` "
                 f"at matched interactivity (tok/s/user = 1000 / median TPOT), per-GPU throughput, "
                 f"{run.workload.repeats} repeat(s) per level: pass when the {st.confidence:.0%} "
                 f"interval on the ratio run / baseline is at or above {st.threshold:.2f}, fail when it is all below, "
                 f"otherwise inconclusive{noise}."
                 + (" This run wrote the baselines (--baseline-update)." if opts.baseline_update else "") + "\n\n")
        text = (markdown.header("Regression", run) + intro + markdown.throughput_table(rows, "baseline")
                + markdown.levels_table(rows) + markdown.applied_table(rows))
        return markdown.write(run.paths.matrix(self.name), text)
