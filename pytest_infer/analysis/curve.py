"""Throughput-interactivity curves: the Pareto frontier and monotone interpolation without extrapolation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


SATURATION_GAIN = 1.1  # throughput gained per doubling of concurrency below which a sweep has saturated


@dataclass(frozen=True)
class Sweeps:
    """One deployment measured `len(repeats)` times: a curve per repeat, and their mean curve.

    A deployment is *saturated* when its highest concurrency buys no more throughput (under 10% per
    doubling of concurrency over the best lower level: a batch cap, a bottleneck).
    Its frontier then extends flat to lower interactivity:
    its best point already serves any lower interactivity, and more load would not raise throughput.
    That is attainment, not extrapolation; an unsaturated sweep is never extended.
    """

    name: str
    repeats: tuple[Curve, ...]
    mean: Curve
    saturated: bool = False
    saturation: str = ""  # why, with numbers
    # Per repeat, the interleaved round it was measured in ("": alone); see Level.block.
    blocks: tuple[str, ...] = ()
    # Per repeat, its measured points by concurrency (dominated ones too): rounds are matched on them.
    levels: tuple[Mapping[int, Point], ...] = ()

    @classmethod
    def from_levels(cls, name: str, levels: Sequence[tuple[int, int, Point]],
                    blocks: Mapping[int, str] | None = None) -> Sweeps:
        """(repeat, concurrency, point) triples; the mean curve averages each concurrency's repeats.
        `blocks`: repeat -> interleaved round."""
        by_rep: dict[int, dict[int, Point]] = {}
        by_conc: dict[int, list[Point]] = {}
        for rep, conc, p in levels:
            by_rep.setdefault(rep, {})[conc] = p
            by_conc.setdefault(conc, []).append(p)
        mean_at = {c: Point(float(np.mean([p.interactivity for p in ps])), float(np.mean([p.throughput for p in ps])))
                   for c, ps in sorted(by_conc.items())}
        saturated, why = False, ""
        if len(mean_at) >= 2:
            *lower, top = mean_at
            best = max(lower, key=lambda c: mean_at[c].throughput)
            # Gain per doubling of concurrency: 4x the load for 10% more (a batch cap, measured with
            # noise) is as saturated as 2x for 5%; a GPU's 2x for 20% is not.
            doublings = max(math.log2(max(top, 1) / max(best, 1)), 1.0)
            gain = (mean_at[top].throughput / mean_at[best].throughput) ** (1 / doublings)
            if gain < SATURATION_GAIN:
                saturated = True
                why = (f"{name} saturates: {mean_at[top].throughput:.0f} tok/s/GPU at concurrency {top} vs "
                       f"{mean_at[best].throughput:.0f} at {best}")
        reps = sorted(by_rep)
        return cls(name, tuple(Curve.from_points(name, list(by_rep[r].values())) for r in reps),
                   Curve.from_points(name, list(mean_at.values())), saturated, why,
                   tuple((blocks or {}).get(r, "") for r in reps), tuple(by_rep[r] for r in reps))

    @classmethod
    def from_records(cls, name: str, records: Iterable[Mapping[str, Any]]) -> Sweeps:
        """From stored levels (a Measurement's, or a report row's): repeat, concurrency, interactivity and
        per_gpu_throughput keys, and block when measured interleaved."""
        rows = list(records)
        blocks: dict[int, set[str]] = {}
        for r in rows:
            blocks.setdefault(int(r.get("repeat", 0)), set()).add(str(r.get("block") or ""))
        return cls.from_levels(name, [(int(r.get("repeat", 0)), int(r["concurrency"]),
                                       Point(float(r["interactivity"]), float(r["per_gpu_throughput"])))
                                      for r in rows],
                               # a repeat resumed in another round belongs to none
                               {rep: next(iter(b)) if len(b) == 1 else "" for rep, b in blocks.items()})

    def paired_with(self, other: Sweeps) -> list[tuple[int, int]] | None:
        """(my repeat, its repeat) measured in the same interleaved rounds, when every repeat of both has
        its partner and there are at least two; else None (compare unpaired)."""
        mine = {b: i for i, b in enumerate(self.blocks) if b}
        theirs = {b: i for i, b in enumerate(other.blocks) if b}
        if len(mine) < 2 or set(mine) != set(theirs) or len(mine) != len(self.repeats) \
                or len(theirs) != len(other.repeats):
            return None
        return [(mine[b], theirs[b]) for b in sorted(mine)]

    @property
    def common_span(self) -> tuple[float, float]:
        """Interactivity every repeat covers (may be empty: low > high)."""
        return max(c.span[0] for c in self.repeats), min(c.span[1] for c in self.repeats)

    def covers(self, x: float) -> bool:
        return all(c.covers(x) or (self.saturated and x < c.span[0]) for c in self.repeats)

    def extended(self, x: float) -> bool:
        """True when x lies below the measured span (served by the saturated flat extension)."""
        return self.saturated and any(x < c.span[0] - 1e-9 for c in self.repeats)

    def at(self, x: float) -> list[float]:
        """Throughput at x on each repeat's frontier (x must be covered by all of them)."""
        got = [self.at_repeat(i, x) for i in range(len(self.repeats))]
        return [y for y in got if y is not None]

    def at_repeat(self, i: int, x: float) -> float | None:
        """Throughput at x on repeat i's frontier, flat below it when saturated; None where not covered."""
        c = self.repeats[i]
        return c.frontier[0].throughput if self.saturated and x < c.span[0] else c.at(x)
