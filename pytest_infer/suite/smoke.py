"""Smoke: every stack starts and answers one greedy completion (no sweep, nothing stored)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pytest_infer.measure.runner import MeasurementFailed, smoke
from pytest_infer.report import markdown
from pytest_infer.report.rows import Row, StackRow
from pytest_infer.space import Stack
from pytest_infer.suite.base import Result, Suite

if TYPE_CHECKING:
    from pytest_infer.lab import Lab
    from pytest_infer.run import Run
    from pytest_infer.selection import Selection


class Smoke(Suite):
    name = "smoke"
    unaffected_by = ("silent performance", "silent accuracy")
    with_parts = False
    properties_of_row = ("launch_s", "first_request_s")

    def __init__(self, run: Run, selection: Selection, lab: Lab) -> None:
        super().__init__(run, selection, lab)
        self._failures: dict[str, str] = {}  # stack id -> first line of why its smoke test failed

    def failed_words(self, exc: Exception) -> str:
        return "smoke failed"

    def check(self, stack: Stack) -> Result:
        self.selection.fail_fast_on_broken_part(stack, lambda part: self._failures.get(part.id))
        try:
            got = smoke(self.lab.runner(stack.engine), stack)
        except MeasurementFailed as exc:
            self._failures[stack.id] = str(exc).splitlines()[0]
            raise
        message = (f"healthy after {got.launch_s:.0f} s; one greedy completion in {got.first_s:.2f} s: "
                   f"{got.text!r}")
        return Result("pass", message, StackRow(stack=stack.id, message=message, launch_s=round(got.launch_s, 1),
                                                first_request_s=round(got.first_s, 2),
                                                applied=got.evidence.summary() if got.evidence else None))

    def report(self, rows: list[Row]) -> Path:
        text = (markdown.header("Smoke", self.run) + "Each stack launched and asked for one greedy completion.\n\n"
                + markdown.throughput_table(rows, "best part") + markdown.applied_table(rows))
        return markdown.write(self.run.paths.matrix(self.name), text)
