"""Accuracy parity: is a stack's accuracy non-inferior to its reference's, and do lossless optimizations
keep greedy outputs? Pure functions over per-sample outcomes and scores (live, stored or replayed).

Paired (both runs scored the same documents): the difference stack - reference of two correlated
proportions, with Newcombe's hybrid score interval for paired proportions (Newcombe 1998, method 10).
It is built from the two Wilson intervals and the phi correlation of the 2x2 table, so it stays honest
when the runs disagree on few documents -- the usual case for a good stack -- where a Wald or t interval
on the paired differences collapses to zero width (identical answers "prove" an exact zero).

Unpaired (two published score +- stderr rows, as InferenceX's gsm8k-evals.json): difference of the
scores with a normal interval on sqrt(se1^2 + se2^2). It ignores that both runs saw the same questions
(positively correlated), so it is wider than the paired interval would be; the verdict says "unpaired".

Verdict as for throughput: pass when the whole interval is above -margin, fail when all of it is
below, inconclusive otherwise (with the documents that would decide it if the spread holds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pytest_infer.analysis.stats import two_sided_z

VerdictKind = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Difference:
    """stack - reference accuracy, with its interval."""

    diff: float
    low: float
    high: float
    method: str  # "paired Newcombe" or "unpaired normal"
    n: int  # documents compared (paired) or the smaller n of the two rows (unpaired)
    stack_score: float
    ref_score: float
    only_stack: int = 0  # documents only the stack got right (paired)
    only_ref: int = 0  # documents only the reference got right (paired)

    def __str__(self) -> str:
        return f"{self.diff:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(frozen=True)
class ParityVerdict:
    check: str  # "parity vs base", "parity vs fp4", "floor", "output agreement"
    verdict: VerdictKind
    message: str
    threshold: float
    value: float | None = None  # the estimate the threshold applies to
    low: float | None = None
    high: float | None = None
    method: str = ""
    n: int = 0
    needed: int | None = None  # inconclusive: documents that would decide it


def wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def paired_difference(stack: Mapping[str, int], ref: Mapping[str, int], confidence: float = 0.95) -> Difference:
    """Newcombe's method 10 on the documents both runs scored (doc id -> 1 correct / 0 wrong)."""
    common = sorted(set(stack) & set(ref))
    n = len(common)
    if n == 0:
        raise ValueError("no document was scored by both runs")
    both = sum(1 for d in common if stack[d] and ref[d])
    only_s = sum(1 for d in common if stack[d] and not ref[d])
    only_r = sum(1 for d in common if ref[d] and not stack[d])
    neither = n - both - only_s - only_r
    p1, p2 = (both + only_s) / n, (both + only_r) / n
    l1, u1 = wilson(both + only_s, n, confidence)
    l2, u2 = wilson(both + only_r, n, confidence)
    denom = (both + only_s) * (only_r + neither) * (both + only_r) * (only_s + neither)
    # Newcombe's phi: the 2x2 table's correlation, with his continuity correction of the cross product.
    raw = both * neither - only_s * only_r
    cross = raw - n / 2 if raw > n / 2 else float(raw) if raw < 0 else 0.0
    phi = cross / math.sqrt(denom) if denom > 0 else 0.0
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return Difference(d, max(-1.0, low), min(1.0, high), "paired Newcombe", n, p1, p2, only_s, only_r)


def unpaired_difference(stack_score: float, stack_se: float, ref_score: float, ref_se: float, n: int,
                        confidence: float = 0.95) -> Difference:
    d, se = stack_score - ref_score, math.hypot(stack_se, ref_se)
    z = two_sided_z(confidence)
    return Difference(d, d - z * se, d + z * se, "unpaired normal", n, stack_score, ref_score)


def non_inferiority(diff: Difference, margin: float, check: str, stack: str, ref: str,
                    confidence: float = 0.95) -> ParityVerdict:
    """pass: the interval lies above -margin; fail: below it; else inconclusive."""
    where = (f"{stack} {diff.stack_score:.4f} vs {ref} {diff.ref_score:.4f}: difference {diff} "
             f"({confidence:.0%} {diff.method}, n={diff.n}"
             + (f", {diff.only_stack} right only on the stack, {diff.only_ref} only on {ref}"
                if diff.method.startswith("paired") else "") + f"), margin -{margin:.3f}")
    def verdict(kind: VerdictKind, text: str, needed: int | None = None) -> ParityVerdict:
        return ParityVerdict(check, kind, f"{where}: {text}", -margin, diff.diff, diff.low, diff.high, diff.method,
                             diff.n, needed)

    if diff.low > -margin:
        return verdict("pass", "non-inferior")
    if diff.high < -margin:
        return verdict("fail", "the stack loses more accuracy than the margin allows")
    need = _needed(diff, margin)
    more = (f"; about {need} documents would decide it if the spread holds" if need else
            "; the estimate sits on the margin")
    return verdict("inconclusive", f"the interval straddles the margin{more}", need)


def _needed(diff: Difference, margin: float) -> int | None:
    """Documents at which the interval's half-width would clear the margin, scaling as 1/sqrt(n)."""
    gap = abs(diff.diff + margin)
    half = (diff.high - diff.low) / 2
    if gap < 1e-9 or half <= 0 or diff.n <= 0:
        return None
    return max(diff.n + 1, math.ceil(diff.n * (half / gap) ** 2))


def floor_check(score: float, stderr: float | None, n: int, floor: float, task: str,
                confidence: float = 0.95) -> ParityVerdict:
    """The model's absolute floor (InferenceX thresholds: GSM8K 0.91 for DeepSeek-R1), on the point score
    as those thresholds are applied; the interval is reported alongside."""
    z = two_sided_z(confidence)
    lo, hi = (score - z * stderr, score + z * stderr) if stderr is not None else (score, score)
    text = f"{task} {score:.4f}" + (f" ± {stderr:.4f}" if stderr is not None else "") + f" (n={n}), floor {floor:.3f}"
    if score >= floor:
        return ParityVerdict("floor", "pass", f"{text}: at or above the floor", floor, score, lo, hi, "point", n)
    return ParityVerdict("floor", "fail", f"{text}: below the floor", floor, score, lo, hi, "point", n)


@dataclass(frozen=True)
class Agreement:
    agree: int
    n: int
    low: float
    high: float
    mean_prefix: float  # mean share of the reference's characters matched before the first difference
    first_mismatch: tuple[str, str, str] | None  # (prompt, reference text, stack text)

    @property
    def rate(self) -> float:
        return self.agree / self.n if self.n else 0.0


def agreement(stack: Mapping[str, str], ref: Mapping[str, str], confidence: float = 0.95) -> Agreement:
    """Greedy outputs on the same prompts: the share identical, with a Wilson interval."""
    common = sorted(set(stack) & set(ref))
    if not common:
        raise ValueError("no prompt was answered by both runs")
    same = [p for p in common if stack[p] == ref[p]]
    prefixes = []
    for p in common:
        a, b = ref[p], stack[p]
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        prefixes.append(k / len(a) if a else float(a == b))
    low, high = wilson(len(same), len(common), confidence)
    miss = next(((p, ref[p], stack[p]) for p in common if stack[p] != ref[p]), None)
    return Agreement(len(same), len(common), low, high, sum(prefixes) / len(prefixes), miss)


def agreement_check(a: Agreement, threshold: float, stack: str, ref: str) -> ParityVerdict:
    """Lossless optimizations: the point agreement rate must reach the threshold (greedy decoding is
    deterministic per prompt; the Wilson interval says how well the prompt set pins the rate down)."""
    text = (f"{stack} vs {ref}: {a.agree}/{a.n} greedy outputs identical ({a.rate:.3f} [{a.low:.3f}, {a.high:.3f}]), "
            f"mean matched prefix {a.mean_prefix:.3f}, threshold {threshold:.3f}")
    if a.first_mismatch is not None:
        p, r, s = a.first_mismatch
        text += f"; first difference: {p!r} -> {ref} {r!r}, {stack} {s!r}"
    kind: VerdictKind = "pass" if a.rate >= threshold else "fail"
    return ParityVerdict("output agreement", kind, text, threshold, a.rate, a.low, a.high, "wilson", a.n)
