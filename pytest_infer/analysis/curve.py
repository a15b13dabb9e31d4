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
