"""Stacking efficiency: how much of what its parts promise a stack delivers (issue 17, part 1).

The stacks of one GPU and engine are a 2^k factorial experiment. At matched interactivity x a stack of
optimizations O1..Ok gains S(x)/B(x) over base; independent factors would gain the product of the parts'
gains, prod Oi(x)/B(x). Efficiency is their quotient,

    E(x) = (S/B) / prod(Oi/B) = S * B^(k-1) / prod Oi,

1.0 when the optimizations stack as independent factors, below 1 when stacking loses what the parts win.
Measured in interleaved rounds (every sweep has a repeat in each round), E is computed round by round at
the interactivity the stack reached at each concurrency in that round (moved into the span every sweep
covers in it), and the interval is the paired one the composability check uses, on the log of E.
Otherwise E is a point estimate on the mean curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_infer.analysis.curve import Sweeps
from pytest_infer.analysis.stats import RatioInterval, paired_ratio_interval


@dataclass(frozen=True)
class Efficiency:
    concurrency: int  # the stack's level the interactivity was taken from
    interactivity: float  # geometric mean over rounds
    interval: RatioInterval  # E with its interval (method "point" when not paired)


def _rounds(sweeps: Sequence[Sweeps]) -> list[list[int]] | None:
    """Per round, each sweep's repeat index (sweeps in the order given); None unless all share every round."""
    first = sweeps[0]
    pairs = [first.paired_with(s) for s in sweeps[1:]]
    if any(p is None for p in pairs):
        return None
    return [[i, *(dict(p)[i] for p in pairs if p is not None)] for i in range(len(first.repeats))]


def stacking_efficiency(stack: Sweeps, base: Sweeps, singles: Sequence[Sweeps], confidence: float = 0.95,
                        bootstrap_from: int = 10) -> list[Efficiency]:
    """E at each concurrency of the stack that every sweep covers; `singles` are its one-optimization parts."""
    if len(singles) < 2:
        raise ValueError("stacking efficiency needs a stack of two or more optimizations")
    k = len(singles)
    every = [stack, base, *singles]
    rounds = _rounds(every)
    concurrencies = sorted(set.intersection(*(set(lv) for lv in stack.levels))) if stack.levels else []
    out: list[Efficiency] = []
    for conc in concurrencies:
        if rounds is not None:
            xs, top, bottom = [], [], []
            for idx in rounds:
                curves = [sw.repeats[i] for sw, i in zip(every, idx, strict=True)]
                lo, hi = max(c.span[0] for c in curves), min(c.span[1] for c in curves)
                if lo > hi:
                    break
                x = min(max(stack.levels[idx[0]][conc].interactivity, lo), hi)
                ys = [c.at(x) for c in curves]
                if any(y is None or y <= 0 for y in ys):
                    break
                s, b, *parts = (float(y) for y in ys if y is not None)
                xs.append(x)
                top.append(s * b ** (k - 1))
                bottom.append(math.prod(parts))
            else:
                out.append(Efficiency(conc, math.exp(sum(math.log(x) for x in xs) / len(xs)),
                                      paired_ratio_interval(top, bottom, confidence, bootstrap_from)))
            continue
        lo, hi = max(sw.mean.span[0] for sw in every), min(sw.mean.span[1] for sw in every)
        if lo > hi:
            continue
        at = [lv[conc].interactivity for lv in stack.levels]
        x = min(max(sum(at) / len(at), lo), hi)  # the stack's mean level, on the mean curves
        got = [sw.mean.at(x) for sw in every]
        if all(y is not None and y > 0 for y in got):
            s, b, *parts = (float(y) for y in got if y is not None)
            e = s * b ** (k - 1) / math.prod(parts)
            out.append(Efficiency(conc, x, RatioInterval(e, e, e, 1, 1, "point", confidence)))
    return out


def partitions(opts: Sequence[str]) -> list[list[tuple[str, ...]]]:
    """Every way to split a stack's optimizations into two or more sub-stacks (blocks keep the stack's
    order): the predictions a larger stack can be held to, the singles' product among them."""
    if not opts:
        return []
    first, rest = opts[0], list(opts[1:])
    out: list[list[tuple[str, ...]]] = [[(first,)]] if not rest else []
    for sub in partitions(rest) + ([[tuple(rest)]] if rest else []):
        out.append([(first,), *sub])  # first alone
        for i in range(len(sub)):  # first joins one block
            out.append([*sub[:i], (first, *sub[i]), *sub[i + 1:]])
    seen, unique = set(), []
    for p in out:
        key = frozenset(frozenset(b) for b in p)
        if len(p) >= 2 and key not in seen:
            seen.add(key)
            unique.append(sorted((tuple(o for o in opts if o in b) for b in p), key=lambda b: opts.index(b[0])))
    return unique


def against_best_prediction(stack: Sweeps, base: Sweeps, opts: Sequence[str], measured: dict[str, Sweeps],
                            confidence: float = 0.95, bootstrap_from: int = 10
                            ) -> tuple[str, list[Efficiency]] | None:
    """A stack of three or more against the best prediction its sub-stacks make: for each split into
    measured sub-stacks P1..Pm, E = (S/B) / prod(Pi/B); the best prediction (the highest predicted gain)
    gives the lowest E, judged at its worst level. The split is named `disagg+mtp x fp4`. None when no
    split of two or more blocks was measured beyond the singles' own (that is the plain efficiency)."""
    best: tuple[float, str, list[Efficiency]] | None = None
    for split in partitions(opts):
        if all(len(b) == 1 for b in split):
            continue
        labels = ["+".join(b) for b in split]
        if not all(lbl in measured for lbl in labels):
            continue
        effs = stacking_efficiency(stack, base, [measured[lbl] for lbl in labels], confidence, bootstrap_from)
        if effs:
            worst = min(e.interval.ratio for e in effs)
            if best is None or worst < best[0]:
                best = (worst, " x ".join(labels), effs)
    return (best[1], best[2]) if best is not None else None
