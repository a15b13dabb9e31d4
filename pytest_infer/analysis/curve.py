"""Throughput-interactivity curves: the Pareto frontier and monotone interpolation without extrapolation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Point:
    interactivity: float  # tok/s/user
    throughput: float  # tok/s per GPU


@dataclass(frozen=True)
class Curve:
    name: str
    frontier: tuple[Point, ...]  # interactivity ascending, throughput descending

    @classmethod
    def from_points(cls, name: str, points: Sequence[Point]) -> Curve:
        return cls(name, tuple(pareto_frontier(points)))

    @property
    def span(self) -> tuple[float, float]:
        return self.frontier[0].interactivity, self.frontier[-1].interactivity

    def covers(self, x: float) -> bool:
        lo, hi = self.span
        return lo - 1e-9 <= x <= hi + 1e-9

    def at(self, x: float) -> float | None:
        """Throughput at interactivity x on the frontier; None outside it (no extrapolation)."""
        if not self.frontier or not self.covers(x):
            return None
        if len(self.frontier) == 1:
            return self.frontier[0].throughput
        from scipy.interpolate import PchipInterpolator

        xs = np.array([p.interactivity for p in self.frontier])
        ys = np.array([p.throughput for p in self.frontier])
        return float(PchipInterpolator(xs, ys)(min(max(x, xs[0]), xs[-1])))


def pareto_frontier(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both axes (more throughput at no less interactivity)."""
    best = -np.inf
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (-p.interactivity, -p.throughput)):
        if p.throughput > best:
            out.append(p)
            best = p.throughput
    return out[::-1]


@dataclass(frozen=True)
class Sweeps:
    """One deployment measured `len(repeats)` times: a curve per repeat, and their mean curve."""

    name: str
    repeats: tuple[Curve, ...]
    mean: Curve

    @classmethod
    def from_levels(cls, name: str, levels: Sequence[tuple[int, int, Point]]) -> Sweeps:
        """(repeat, concurrency, point) triples; the mean curve averages each concurrency's repeats."""
        by_rep: dict[int, list[Point]] = {}
        by_conc: dict[int, list[Point]] = {}
        for rep, conc, p in levels:
            by_rep.setdefault(rep, []).append(p)
            by_conc.setdefault(conc, []).append(p)
        mean = [Point(float(np.mean([p.interactivity for p in ps])), float(np.mean([p.throughput for p in ps])))
                for ps in by_conc.values()]
        return cls(name, tuple(Curve.from_points(name, by_rep[r]) for r in sorted(by_rep)),
                   Curve.from_points(name, mean))

    @property
    def common_span(self) -> tuple[float, float]:
        """Interactivity every repeat covers (may be empty: low > high)."""
        return max(c.span[0] for c in self.repeats), min(c.span[1] for c in self.repeats)

    def covers(self, x: float) -> bool:
        return all(c.covers(x) for c in self.repeats)

    def at(self, x: float) -> list[float]:
        """Throughput at x on each repeat's frontier (x must be covered by all of them)."""
        got = [c.at(x) for c in self.repeats]
        return [y for y in got if y is not None]
