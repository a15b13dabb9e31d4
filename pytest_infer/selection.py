"""Which stacks a run has, which it selects, which it skips (unsupported) and which it expects to fail
(known broken, strict xfail naming the upstream issue)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pytest_infer.matrix import KnownBroken
from pytest_infer.measure.runner import MeasurementFailed
from pytest_infer.run import Run
from pytest_infer.space import Stack, all_stacks, matches


def _applies(kb: KnownBroken, version: str | None) -> bool:
    if not kb.versions or version is None:
        return True  # no engine here to ask (a plan, a replay): assume the registry holds
    return Version(version.split("+")[0]) in SpecifierSet(kb.versions)


class Selection:
    def __init__(self, run: Run, replayed: list[Stack] | None = None) -> None:
        self.run = run
        # --results of results measured elsewhere: only the stacks (and variants) they hold.
        self.replayed = replayed
        self.stacks = replayed if replayed is not None else [
            s for e in run.engines for s in all_stacks(run.gpu, e, run.optimizations)]
        self.planned: list[Stack] = []  # the stacks of the collected items (after deselection)

    def report_order(self) -> list[str]:
        """Stack ids with one stack's engines side by side (vLLM's and SGLang's fp4+disagg rows together),
        in the matrix's stack order; tests still run engine by engine."""
        first: dict[tuple[str, str], int] = {}
        for s in self.stacks:
            first.setdefault((s.label, s.variant), len(first))
        return [s.id for s in sorted(self.stacks, key=lambda s: first[(s.label, s.variant)])]

    def selected(self, stack: Stack) -> bool:
        # Repeated --stack options are a union ("--stack base --stack mtp" runs both), as "repeatable" reads.
        exprs = self.run.stack_exprs
        return not exprs or any(matches(stack, e, self.run.optimizations) for e in exprs)

    def unsupported(self, stack: Stack) -> str | None:
        if self.replayed is not None and stack not in self.replayed:  # a part the results do not hold
            return f"not in the results replayed ({self.run.options.results})"
        if stack.engine not in self.run.matrix.engines:  # replayed accuracy rows of an engine the matrices lack
            return None
        return self.run.matrix.unsupported_reason(stack.engine, stack.gpu, stack.opts)

    def known_broken(self, stack: Stack) -> KnownBroken | None:
        version = self.run.versions.get(stack.engine)
        for kb in self.run.matrix.known_broken_for(stack.engine, stack.gpu):
            if matches(stack, kb.stack, self.run.optimizations) and _applies(kb, version):
                return kb
        return None

    def param(self, stack: Stack, unaffected_by: Iterable[str]) -> Any:
        """The stack as a test parameter with its marks. A suite is unaffected by the known-broken kinds it
        does not measure (a known slowdown still has to give right answers, and it still starts)."""
        marks: list[pytest.MarkDecorator] = []
        why = self.unsupported(stack)
        if why:
            marks.append(pytest.mark.skip(reason=f"unsupported: {why}"))
        else:
            kb = self.known_broken(stack)
            if kb is not None and kb.kind not in tuple(unaffected_by):
                marks.append(pytest.mark.xfail(strict=True, reason=f"known broken ({kb.kind}): {kb.failure} "
                                               f"[{kb.issue}]"))
        return pytest.param(stack, id=stack.id, marks=marks)

    def split(self, items: list[pytest.Item]) -> tuple[list[pytest.Item], list[pytest.Item]]:
        """(kept, deselected) by --stack."""
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            stack = stack_of(item)
            (keep if stack is None or self.selected(stack) else drop).append(item)
        return keep, drop

    def plan(self, items: list[pytest.Item]) -> list[Stack]:
        self.planned = list(dict.fromkeys(s for s in map(stack_of, items) if s is not None))
        return self.planned

    def measurable(self, stack: Stack) -> bool:
        """Launched with the others (interleaved): not unsupported, not expected to fail."""
        return not self.unsupported(stack) and self.known_broken(stack) is None

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


def stack_of(item: pytest.Item) -> Stack | None:
    callspec = getattr(item, "callspec", None)
    stack = callspec.params.get("stack") if callspec is not None else None
    return stack if isinstance(stack, Stack) else None
