"""A stack's row: written by its test (on the report, so it travels under xdist), read by the reports.

One typed model for writer and readers. It travels as JSON in the test's `infer` user property (JUnit
keeps it too); fields a suite does not fill stay out of the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pydantic import BaseModel

PROPERTY = "infer"  # the user property carrying a StackRow


class LevelRow(BaseModel):
    concurrency: int
    repeat: int
    interactivity: float
    per_gpu_throughput: float
    per_decode_gpu_output_throughput: float
    median_ttft_ms: float
    per_gpu_output_throughput: float | None = None  # what a price per million output tokens divides
    metrics: dict[str, dict[str, float]] | None = None  # per role, scraped around the level
    power_w: float | None = None  # mean device power over the level, all its devices (measure/power.py)
    energy_j: float | None = None  # power_w x the level's duration
    num_prompts: int | None = None
    completed: int | None = None
    failed: int | None = None
    problems: list[str] | None = None  # why the level does not count (it is in no curve)


class CheckRow(BaseModel):
    """One accuracy check (parity, floor, agreement)."""

    check: str
    verdict: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    threshold: float | None = None
    method: str = ""
    n: int | None = None
    message: str = ""


class StackRow(BaseModel):
    stack: str
    message: str | None = None  # why it failed, or what a check without a verdict saw
    verdict: str | None = None
    # a measured deployment
    gpus: int | None = None
    decode_gpus: int | None = None
    launch_s: float | None = None
    engine_version: str | None = None  # what measured it (a replay's: the data's own)
    date: str | None = None  # when it was measured (UTC day, or the replayed files' dates)
    levels: list[LevelRow] | None = None
    mtp_acceptance_rate: float | None = None
    warnings: list[str] | None = None  # what the data cannot show (e.g. a format without request counts)
    applied: str | None = None  # what the deployment showed of the stack's claims (measure/evidence.py), one line
    power_note: str | None = None  # how device power was read, or why the levels carry none (measure/power.py)
    # Levels of the stack, and of the parts it was compared with, that do not count (failed requests...)
    failed_levels: list[str] | None = None
    saturation: str | None = None  # the flat extension of a saturated sweep served some level: why
    extended_levels: list[str] | None = None  # the matched levels (interactivity) the extension served
    # a throughput comparison (composability: the best part; regression: the baseline), at its worst level
    tolerance: float | None = None
    repeats_needed: int | None = None
    worst_ratio: float | None = None
    worst_low: float | None = None
    worst_high: float | None = None
    interval_method: str | None = None
    worst_interactivity: float | None = None
    best_part: str | None = None
    stack_throughput: float | None = None
    part_throughput: float | None = None
    ratios: dict[str, float] | None = None  # interactivity (2 decimals) -> ratio
    intervals: dict[str, list[float]] | None = None
    # composability, stacks of 2+ optimizations: (S/B) / prod(Oi/B) at the stack's levels (analysis/efficiency.py)
    efficiency: float | None = None  # the lowest over the levels, with its interval
    efficiency_low: float | None = None
    efficiency_high: float | None = None
    efficiency_interactivity: float | None = None
    efficiencies: dict[str, float] | None = None  # interactivity (2 decimals) -> efficiency
    # stacks of 3+: against the best prediction of its measured sub-stacks (the split named), lowest level
    split: str | None = None  # e.g. "disagg+mtp x fp4"
    split_efficiency: float | None = None
    split_efficiency_low: float | None = None
    split_efficiency_high: float | None = None
    # accuracy (conformance)
    task: str | None = None
    n: int | None = None
    paired: bool | None = None
    score: float | None = None
    stderr: float | None = None
    eval_s: float | None = None
    greedy_s: float | None = None
    checks: list[CheckRow] | None = None
    # smoke
    first_request_s: float | None = None

    def dumps(self) -> str:
        return self.model_dump_json(exclude_none=True)

    def check(self, name: str) -> CheckRow | None:
        return next((c for c in self.checks or [] if c.check == name), None)


@dataclass
class Row:
    """One stack's line in a suite's matrix: its row and the outcome pytest gave its test."""

    stack: str
    outcome: str = "not run"
    detail: str = ""
    data: StackRow = field(default_factory=lambda: StackRow(stack=""))

    @property
    def inconclusive(self) -> bool:
        return self.outcome == "skipped" and self.detail.startswith("inconclusive")


class Rows:
    """The rows of a run, collected on the controller from the test reports (also under xdist)."""

    def __init__(self) -> None:
        self.by_stack: dict[str, Row] = {}

    def __bool__(self) -> bool:
        return bool(self.by_stack)

    def add(self, report: pytest.TestReport) -> None:
        stack_id = _stack_id_of(report.nodeid)
        if stack_id is None:
            return
        row = self.by_stack.setdefault(stack_id, Row(stack_id, data=StackRow(stack=stack_id)))
        for name, value in report.user_properties:
            if name == PROPERTY:
                row.data = StackRow.model_validate_json(str(value))
        message = row.data.message
        if report.skipped and hasattr(report, "wasxfail"):
            row.outcome, row.detail = "xfail", str(report.wasxfail)
            if message:
                row.detail += f" (seen: {message.splitlines()[0]})"
        elif report.skipped:
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            row.outcome, row.detail = "skipped", reason.removeprefix("Skipped: ")
        elif report.when == "call" and report.passed and hasattr(report, "wasxfail"):
            row.outcome, row.detail = "XPASS", f"known-broken entry no longer fails: {report.wasxfail}"
        elif report.failed:
            row.outcome = "XPASS(strict)" if "XPASS(strict)" in str(report.longrepr) else "failed"
            row.detail = message or _first_line(report.longreprtext)
        elif report.when == "call" and report.passed:
            row.outcome, row.detail = "passed", message or ""

    def in_order(self, order: list[str]) -> list[Row]:
        """By the run's stack order (the matrix's), stacks it does not know last."""
        at = {s: i for i, s in enumerate(order)}
        return sorted(self.by_stack.values(), key=lambda r: at.get(r.stack, len(at)))


def _first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("E ")]
    return (lines[0].strip()[2:].strip() if lines else text.strip().splitlines()[-1] if text.strip() else "")


def _stack_id_of(nodeid: str) -> str | None:
    if "[" not in nodeid:
        return None
    return nodeid.rsplit("[", 1)[1].rstrip("]")
