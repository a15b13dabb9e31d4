"""Verdicts: pure functions over curves, so they run the same on live and stored results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from pytest_infer.analysis.curve import Curve, Point

VerdictKind = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class LevelComparison:
    interactivity: float
    stack_throughput: float
    part: str
    part_throughput: float

    @property
    def ratio(self) -> float:
        return self.stack_throughput / self.part_throughput


@dataclass
class Verdict:
    stack: str
    check: str
    verdict: VerdictKind
    tolerance: float
    message: str
    levels: list[LevelComparison] = field(default_factory=list)

    @property
    def worst(self) -> LevelComparison | None:
        return min(self.levels, key=lambda lc: lc.ratio) if self.levels else None

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["levels"] = [{**asdict(lc), "ratio": lc.ratio} for lc in self.levels]
        return d


def _grid(stack: Curve, parts: Sequence[Curve]) -> list[float]:
    """Interactivity levels where the stack and at least one part are both measured."""
    xs = {p.interactivity for c in (stack, *parts) for p in c.frontier}
    return sorted(x for x in xs if stack.covers(x) and any(c.covers(x) for c in parts))


def composability(stack: Curve, parts: Sequence[Curve], tolerance: float) -> Verdict:
    """Does the stack beat the best of its parts at matched interactivity (within `tolerance`)?"""
    name = stack.name
    if not parts:
        return Verdict(name, "composability", "inconclusive", tolerance, "no part could be measured")
    levels: list[LevelComparison] = []
    for x in _grid(stack, parts):
        values = [(c.at(x), c.name) for c in parts]
        best_y, best_name = max((v, n) for v, n in values if v is not None)
        y = stack.at(x)
        assert y is not None
        levels.append(LevelComparison(x, y, best_name, best_y))
    if not levels:
        return _no_overlap(stack, parts, tolerance)
    worst = min(levels, key=lambda lc: lc.ratio)
    where = (f"at {worst.interactivity:.1f} tok/s/user: {name} {worst.stack_throughput:.1f} vs "
             f"{worst.part} {worst.part_throughput:.1f} tok/s/GPU, ratio {worst.ratio:.3f}")
    if worst.ratio < 1 - tolerance:
        losing = [lc for lc in levels if lc.ratio < 1 - tolerance]
        winning = [lc for lc in levels if lc.ratio >= 1]
        cross = ""
        if winning:
            cross = (f"; it wins at {', '.join(f'{lc.interactivity:.1f}' for lc in winning)} tok/s/user and "
                     f"loses at {', '.join(f'{lc.interactivity:.1f}' for lc in losing)}")
        return Verdict(name, "composability", "fail", tolerance,
                       f"{name} is slower than its part {worst.part} beyond the {tolerance:.0%} tolerance "
                       f"{where}{cross}", levels)
    return Verdict(name, "composability", "pass", tolerance,
                   f"{name} keeps up with its best part at {len(levels)} matched level(s); worst {where}", levels)


def _no_overlap(stack: Curve, parts: Sequence[Curve], tolerance: float) -> Verdict:
    """No shared interactivity: decide only when one side dominates point by point."""
    def beaten(p: Point, by: Curve, margin: float) -> bool:
        """Some point of `by` is at least as interactive and more than `margin` ahead in throughput."""
        return any(q.interactivity >= p.interactivity and q.throughput * margin > p.throughput for q in by.frontier)

    spans = "; ".join(f"{c.name} covers {c.span[0]:.1f}-{c.span[1]:.1f}" for c in (stack, *parts))
    for part in parts:
        if all(beaten(p, part, 1 - tolerance) for p in stack.frontier):
            top = max(stack.frontier, key=lambda p: p.throughput)
            q = next(q for q in part.frontier if q.interactivity >= top.interactivity
                     and q.throughput * (1 - tolerance) > top.throughput)
            return Verdict(stack.name, "composability", "fail", tolerance,
                           f"{stack.name} has no interactivity level in common with its parts, and {part.name} "
                           f"beats every point of it on both axes, e.g. {stack.name} {top.throughput:.1f} tok/s/GPU "
                           f"at {top.interactivity:.1f} tok/s/user vs {part.name} {q.throughput:.1f} at "
                           f"{q.interactivity:.1f}, ratio {top.throughput / q.throughput:.3f} ({spans} tok/s/user)")
    if all(any(q.interactivity >= p.interactivity and q.throughput >= p.throughput for q in stack.frontier)
           for part in parts for p in part.frontier):
        return Verdict(stack.name, "composability", "pass", tolerance,
                       f"{stack.name} has no interactivity level in common with its parts, and is at least as "
                       f"good as every point of each on both axes ({spans} tok/s/user)")
    return Verdict(stack.name, "composability", "inconclusive", tolerance,
                   f"no interactivity level in common with any part ({spans} tok/s/user); "
                   f"measure more concurrency levels to compare")
