"""Verdicts: pure functions over curves, so they run the same on live and stored results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pytest_infer.analysis.curve import Curve, Point, Sweeps
from pytest_infer.analysis.stats import RatioInterval, paired_ratio_interval, ratio_interval

VerdictKind = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Stats:
    tolerance: float = 0.05
    confidence: float = 0.95
    bootstrap_from: int = 10
    session_noise: float = 0.0  # see stats.ratio_interval

    @property
    def threshold(self) -> float:
        return 1 - self.tolerance


@dataclass(frozen=True)
class LevelComparison:
    interactivity: float
    stack_throughput: float  # geometric mean over the stack's repeats at this interactivity
    part: str
    part_throughput: float
    interval: RatioInterval
    note: str = ""  # e.g. the stack is compared past its sweep because it saturated
    extended: bool = False  # a side's value here comes from a saturated sweep's flat extension

    @property
    def ratio(self) -> float:
        return self.interval.ratio

    def describe(self, stack: str) -> str:
        return (f"at {self.interactivity:.1f} tok/s/user: {stack} {self.stack_throughput:.1f} vs {self.part} "
                f"{self.part_throughput:.1f} tok/s/GPU, ratio {self.interval}"
                + (f" ({self.note})" if self.note else ""))


@dataclass
class Verdict:
    stack: str
    check: str
    verdict: VerdictKind
    tolerance: float
    message: str
    levels: list[LevelComparison] = field(default_factory=list)
    repeats_needed: int | None = None  # inconclusive: repeats per level that would decide it

    @property
    def worst(self) -> LevelComparison | None:
        return min(self.levels, key=lambda lc: lc.ratio) if self.levels else None


def _grid(stack: Sweeps, parts: Sequence[Sweeps]) -> list[float]:
    """Matched interactivity: the mean curves' frontier points, moved into the range every repeat of the
    stack covers, kept where every repeat of some part covers them too."""
    lo, hi = stack.common_span
    if stack.saturated:
        lo = 0.0  # its flat extension serves lower interactivity (see Sweeps)

    def inside(s: Sweeps, x: float) -> float:
        """A part's mean-curve point moved into the span all of its repeats cover (its lowest point sits
        below some repeat's lowest when their interactivity differs), then into the stack's."""
        if s is not stack:
            s_lo, s_hi = s.common_span
            x = min(max(x, s_lo), s_hi) if s_lo <= s_hi else x
        return min(max(x, lo), hi)

    xs = sorted({inside(s, p.interactivity) for s in (stack, *parts) for p in s.mean.frontier})
    out: list[float] = []
    for x in xs:
        if any(p.covers(x) for p in parts) and (not out or x > out[-1] * 1.005):
            out.append(x)
    return out


def _gmean(v: Sequence[float]) -> float:
    return math.exp(sum(math.log(y) for y in v) / len(v))


def compare_at(x: float, stack: Sweeps, parts: Sequence[Sweeps], stats: Stats) -> LevelComparison:
    """The stack against the part with the highest mean throughput at interactivity x, every repeat of
    each side against every repeat of the other (unpaired: across rounds or sessions)."""
    best = max((p for p in parts if p.covers(x)), key=lambda p: sum(p.at(x)) / len(p.at(x)))
    ys, yp = stack.at(x), best.at(x)
    iv = ratio_interval(ys, yp, stats.confidence, stats.bootstrap_from, session_noise=stats.session_noise)
    notes = [f"{s.saturation}: its best point serves this lower interactivity" for s in (stack, best)
             if s.extended(x)]
    return LevelComparison(x, _gmean(ys), best.name, _gmean(yp), iv, "; ".join(notes), extended=len(notes) > 0)


def compare_in_rounds(stack: Sweeps, part: Sweeps, stats: Stats) -> list[LevelComparison]:
    """Stack and part measured in the same interleaved rounds: each round is compared on its own, at the
    interactivity one side reached at a given concurrency in that round (moved into the span both
    cover in that round), and the per-round ratios are paired. A VM that runs a whole round 2x slower
    moves both curves down and left together; one interactivity common to all rounds would compare a
    fast round with a slow one (or find no level at all), where matching inside the round cancels it."""
    pairs = stack.paired_with(part)
    assert pairs is not None

    def span(sw: Sweeps, k: int) -> tuple[float, float]:
        lo, hi = sw.repeats[k].span
        return (0.0 if sw.saturated else lo), hi  # a saturated sweep's best point serves lower levels

    out: list[LevelComparison] = []
    seen: list[list[float]] = []
    for ref, ref_is_part in ((part, True), (stack, False)):
        concurrencies = sorted(set.intersection(*(set(lv) for lv in ref.levels))) if ref.levels else []
        for conc in concurrencies:
            xs: list[float] = []
            for i, j in pairs:
                (slo, shi), (plo, phi) = span(stack, i), span(part, j)
                lo, hi = max(slo, plo), min(shi, phi)
                if lo > hi:
                    break
                xs.append(min(max(ref.levels[j if ref_is_part else i][conc].interactivity, lo), hi))
            else:
                if any(all(abs(x / y - 1) < 0.005 for x, y in zip(xs, prev, strict=True)) for prev in seen):
                    continue  # the same level reached from the other side
                seen.append(xs)
                ys = [stack.at_repeat(i, x) or 0.0 for (i, _), x in zip(pairs, xs, strict=True)]
                yp = [part.at_repeat(j, x) or 0.0 for (_, j), x in zip(pairs, xs, strict=True)]
                iv = paired_ratio_interval(ys, yp, stats.confidence, stats.bootstrap_from)
                notes = [f"matched within each round at {ref.name}'s concurrency {conc}"]
                below = {stack.name: any(x < stack.repeats[i].span[0] for (i, _), x in zip(pairs, xs, strict=True)),
                         part.name: any(x < part.repeats[j].span[0] for (_, j), x in zip(pairs, xs, strict=True))}
                extended = [f"{sw.saturation}: its best point serves this lower interactivity"
                            for sw in (stack, part) if below[sw.name]]
                out.append(LevelComparison(_gmean(xs), _gmean(ys), part.name, _gmean(yp), iv,
                                           "; ".join(notes + extended), extended=bool(extended)))
    return out


@dataclass(frozen=True)
class _Words:
    """How a check names what the stack is compared with."""

    check: str = "composability"
    one: str = "its part"  # "slower than its part base"
    best: str = "its best part"
    all: str = "its parts"
    any: str = "any part"


REGRESSION = _Words("regression", "the", "the baseline", "the baseline", "the baseline")  # vs Sweeps "baseline"


def composability(stack: Sweeps, parts: Sequence[Sweeps], stats: Stats) -> Verdict:
    """Does the stack keep up with the best of its parts at matched interactivity (within the margin)?"""
    return _compare(stack, parts, stats, _Words())


def regression(run: Sweeps, baseline: Sweeps, stats: Stats) -> Verdict:
    """Does this run keep up with the stored baseline of the same stack at matched interactivity? The same
    curves, intervals and three-way decision as composability, with the baseline as the only reference."""
    return _compare(run, [baseline], stats, REGRESSION)


def _compare(stack: Sweeps, parts: Sequence[Sweeps], stats: Stats, words: _Words) -> Verdict:
    name, tol, thr = stack.name, stats.tolerance, stats.threshold
    if not parts:
        return Verdict(name, words.check, "inconclusive", tol, "no part could be measured")
    if all(stack.paired_with(p) is not None for p in parts):
        levels = [lc for p in parts for lc in compare_in_rounds(stack, p, stats)]
    else:
        levels = [compare_at(x, stack, parts, stats) for x in _grid(stack, parts)]
    if not levels:
        return _no_overlap(stack.mean, [p.mean for p in parts], tol, words)
    decided = {lc.interactivity: lc.interval.decide(thr) for lc in levels}
    losing = [lc for lc in levels if decided[lc.interactivity] == "fail"]
    worst = min(levels, key=lambda lc: lc.ratio)
    if losing:
        worst = min(losing, key=lambda lc: lc.ratio)
        winning = [lc for lc in levels if lc.interval.low > 1 or (lc.interval.method == "point" and lc.ratio > 1)]
        cross = ""
        if winning:
            cross = (f"; crossover: it wins at {', '.join(f'{lc.interactivity:.1f}' for lc in winning)} "
                     f"and loses at {', '.join(f'{lc.interactivity:.1f}' for lc in losing)} tok/s/user")
        return Verdict(name, words.check, "fail", tol,
                       f"{name} is slower than {words.one} {worst.part} beyond the {tol:.0%} margin "
                       f"{worst.describe(name)}{cross}", levels)
    open_ = [lc for lc in levels if decided[lc.interactivity] == "inconclusive"]
    if open_:
        hardest = max(open_, key=lambda lc: lc.interval.repeats_to_decide(thr) or 10**6)
        need = hardest.interval.repeats_to_decide(thr)
        iv = hardest.interval
        if need:
            more = f"about {need} repeats per level (now {min(iv.n_a, iv.n_b)}) would decide it if the spread holds"
        elif iv.noise_spans(thr):
            more = (f"the between-session noise alone (±{math.exp(iv.floor) - 1:.0%} at {iv.confidence:.0%}, "
                    f"session_noise {stats.session_noise}) spans the margin: no number of repeats decides it; "
                    f"measure both in one session or widen the margin")
        else:
            more = f"the estimate {hardest.ratio:.3f} sits on the margin: no practical number of repeats decides it"
        return Verdict(name, words.check, "inconclusive", tol,
                       f"the interval straddles the margin {thr:.2f} {hardest.describe(name)}; {more}",
                       levels, repeats_needed=need)
    single = " (one sample per level: point estimates)" if worst.interval.method == "point" else ""
    return Verdict(name, words.check, "pass", tol,
                   f"{name} keeps up with {words.best} at {len(levels)} matched level(s){single}; worst "
                   f"{worst.describe(name)}", levels)


def _no_overlap(stack: Curve, parts: Sequence[Curve], tolerance: float, words: _Words) -> Verdict:
    """No shared interactivity: decide only when one side dominates point by point (mean curves)."""
    def beaten(p: Point, by: Curve, margin: float) -> bool:
        """Some point of `by` is at least as interactive and more than `margin` ahead in throughput."""
        return any(q.interactivity >= p.interactivity and q.throughput * margin > p.throughput for q in by.frontier)

    spans = "; ".join(f"{c.name} covers {c.span[0]:.1f}-{c.span[1]:.1f}" for c in (stack, *parts))
    for part in parts:
        if all(beaten(p, part, 1 - tolerance) for p in stack.frontier):
            top = max(stack.frontier, key=lambda p: p.throughput)
            q = next(q for q in part.frontier if q.interactivity >= top.interactivity
                     and q.throughput * (1 - tolerance) > top.throughput)
            return Verdict(stack.name, words.check, "fail", tolerance,
                           f"{stack.name} has no interactivity level in common with {words.all}, and {part.name} "
                           f"beats every point of it on both axes, e.g. {stack.name} {top.throughput:.1f} tok/s/GPU "
                           f"at {top.interactivity:.1f} tok/s/user vs {part.name} {q.throughput:.1f} at "
                           f"{q.interactivity:.1f}, ratio {top.throughput / q.throughput:.3f} ({spans} tok/s/user)")
    if all(any(q.interactivity >= p.interactivity and q.throughput >= p.throughput for q in stack.frontier)
           for part in parts for p in part.frontier):
        return Verdict(stack.name, words.check, "pass", tolerance,
                       f"{stack.name} has no interactivity level in common with {words.all}, and is at least as "
                       f"good as every point of each on both axes ({spans} tok/s/user)")
    return Verdict(stack.name, words.check, "inconclusive", tolerance,
                   f"no interactivity level in common with {words.any} ({spans} tok/s/user); "
                   f"measure more concurrency levels to compare")


def acceptance_collapse(stack: str, rate: float, mtp_alone: float, share: float) -> str | None:
    """Upstream, MTP + NIXL PD silently dropped the draft KV: the stack kept running, its acceptance fell."""
    if mtp_alone > 0 and rate < share * mtp_alone:
        return (f"{stack}: MTP acceptance rate collapsed to {rate:.3f} against {mtp_alone:.3f} for MTP alone "
                f"(flagged below {share:.0%} of it)")
    return None
