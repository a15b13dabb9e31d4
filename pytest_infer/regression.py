"""The regression suite's logic: a fresh measurement of a stack against its stored baseline.

Kept out of session.py: the session only hands over the stack, its measurement and the options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest

from pytest_infer.analysis.checks import Verdict, regression
from pytest_infer.analysis.curve import Point, Sweeps
from pytest_infer.measure import baselines
from pytest_infer.measure.results import Measurement
from pytest_infer.space import Stack

if TYPE_CHECKING:
    from pytest_infer.session import InferSession

Kind = Literal["written", "compared", "missing", "mismatch"]


@dataclass
class Outcome:
    kind: Kind
    measurement: Measurement | None  # None: nothing was measured (no baseline to compare with)
    message: str
    verdict: Verdict | None = None
    path: Path | None = None


def default_scope(labels: list[str], optimizations: list[str]) -> str:
    """Stack labels as one --stack expression (a label alone means exactly that set; in an expression a
    name means "has it", so each label becomes "has these and none of the others")."""
    from pytest_infer.space import BASE, parse_label

    terms = []
    for label in labels:
        opts = parse_label(label, optimizations)
        terms.append(BASE if not opts else "(" + " and ".join(o if o in opts else f"not {o}" for o in optimizations)
                     + ")")
    if not terms:
        raise ValueError("an empty list: omit the GPU kind to cover every stack")
    return " or ".join(terms)


def baseline_dir(config: pytest.Config) -> Path:
    opt = config.getoption("baseline_dir")
    return Path(opt).resolve() if opt else config.rootpath / "baselines"


def check(infer: InferSession, stack: Stack) -> Outcome:
    """Write the stack's baseline (--baseline-update), or measure it anew and compare. A missing baseline,
    or one from another environment, is found before anything is launched."""
    root = baseline_dir(infer.config)
    path = baselines.path_for(root, stack.gpu, stack.engine, infer.model, stack.label)
    where = _rel(path, infer.config)
    if infer.config.getoption("baseline_update"):
        new = infer.measure(stack)
        baselines.write(path, baselines.from_measurement(new, infer.run_id))
        return Outcome("written", new, f"baseline written: {where} ({len(new.levels)} level(s) over "
                       f"{len(new.sweeps())} repeat(s))", path=path)
    base = baselines.load(path)  # BaselineError: the test fails with its one line
    if base is None:
        return Outcome("missing", None, f"no baseline for {stack.id} at {where}; record one with --baseline-update",
                       path=path)
    # Replayed results carry their own environment; a live run's is known before launching anything.
    m = infer.measure(stack) if infer.runner(stack.engine).replay else None
    # The workload is judged on the stored workload itself, not the hash written with it: a field added
    # to Workload later (read back with its default) must not orphan every existing baseline.
    stored = base.fingerprint.model_copy(update={"workload": baselines.workload_hash(base.workload)})
    blocking, notes = baselines.compare_environments(
        stored, baselines.fingerprint_of(m) if m is not None else expected_fingerprint(infer, stack))
    if blocking:
        return Outcome("mismatch", m, f"baseline {where} is from another environment: {'; '.join(blocking)}; "
                       f"re-record it with --baseline-update", path=path)
    m = m if m is not None else infer.measure(stack)
    verdict = regression(infer.sweeps(m, stack.label), sweeps_of(base), infer.regression_stats)
    verdict.stack = stack.id
    changes = baselines.flag_changes(base.argv, m.argv)
    extra = ([f"flags changed since the baseline: {'; '.join(changes)}"] if changes else []) + \
            ([f"environment: {'; '.join(notes)}"] if notes else [])
    if extra:
        verdict.message += "\n" + "\n".join(extra)
    return Outcome("compared", m, verdict.message, verdict, path)


def expected_fingerprint(infer: InferSession, stack: Stack) -> baselines.Fingerprint:
    """The environment a measurement taken now would carry (nothing launched)."""
    r = infer.runner(stack.engine)
    return baselines.Fingerprint(engine=stack.engine, engine_version=r.engine_version, device=r.device or "unknown",
                                 plugin_version=baselines.plugin_version(),
                                 workload=baselines.workload_hash(infer.matrix.workload(stack.gpu)),
                                 model=r.model_fingerprint or r.model)


def sweeps_of(b: baselines.Baseline) -> Sweeps:
    return Sweeps.from_levels("baseline", [(lv.repeat, lv.concurrency, Point(lv.interactivity, lv.per_gpu_throughput))
                                           for lv in b.levels])


def _rel(path: Path, config: pytest.Config) -> str:
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)


def markdown_intro(infer: InferSession) -> str:
    st = infer.regression_stats
    noise = (f" (intervals include a between-session noise of {st.session_noise:.0%}, log-SD, from an A/A "
             f"calibration)" if st.session_noise else "")
    update = infer.config.getoption("baseline_update")
    return (f"Each stack measured anew and compared with its baseline in `{_rel(baseline_dir(infer.config), infer.config)}` "
            f"at matched interactivity (tok/s/user = 1000 / median TPOT), per-GPU throughput, "
            f"{infer.matrix.workload(infer.gpu).repeats} repeat(s) per level: pass when the {st.confidence:.0%} "
            f"interval on the ratio run / baseline is at or above {st.threshold:.2f}, fail when it is all below, "
            f"otherwise inconclusive{noise}."
            + (" This run wrote the baselines (--baseline-update)." if update else "") + "\n\n")
