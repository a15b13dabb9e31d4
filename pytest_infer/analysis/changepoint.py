"""Change points in a stack's throughput over runs: where a new level starts, and how sure we are.

The segmentation is ruptures' PELT (exact, penalised least squares) on the log values; each boundary it
proposes is then tested, Hunter's "merge" step (Fleming et al., ICPE 2023, as Apache Otava does it): a
two-sample t test between the two segments either side of it, the weakest boundary dropped while its
p-value is above `significance`, and the neighbours of a dropped one tested again on their now longer
segments. What is left are boundaries each of which splits its neighbourhood into two significantly
different levels.

Why logs: throughput noise is multiplicative (a run that is 5% slow is 5% slow at 50 tok/s and at 5000),
so on the log scale the spread is the same on both sides of a step, which the pooled t test assumes, and
a step is a ratio, the quantity the rest of the plugin reports (see stats.py).

The p-value is adjusted for where the boundary was put: PELT chose the best of the m positions that the
two segments together allow, and the best of m tries on pure noise beats a nominal level far more often
than that level (Otava's unadjusted test flags 17% of flat 16-run N(100, 5) series at 0.01). The
p-value reported is Bonferroni's min(1, m * p), which keeps a flat series' false alarms at or under
`significance` (measured at 0.01 on seeded flat N(100, 5) series: 22/2000 flagged at 16 runs, 26/2000
at 6, 17/2000 at 30; see docs/research/changepoint.md).

Each segment has at least MIN_SEGMENT runs, so a single odd run is never a regime of its own, and a
change in the very last run is not reported yet: with fewer than `min_points` values, or a new level
only one run long, the caller compares neighbours with the measurement layer's intervals instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_SEGMENT = 2  # runs in a regime: one lone run is an outlier, not a level
MIN_POINTS = 2 * MIN_SEGMENT  # the shortest series with one boundary between two regimes


@dataclass(frozen=True)
class ChangePoint:
    index: int  # values[index] is the first run of the new level
    mean_before: float  # arithmetic mean of the segment before (back to the previous change point)
    mean_after: float  # arithmetic mean of the segment after (up to the next change point)
    ratio: float  # geometric-mean ratio after / before: 0.8 is a 20% drop
    p_value: float  # two-sided pooled t test on the logs of the two segments, Bonferroni-adjusted
    n_before: int  # runs in the segment before
    n_after: int  # runs in the segment after


def change_points(
    values: Sequence[float], *, significance: float = 0.01, min_points: int = MIN_POINTS
) -> list[ChangePoint]:
    """The change points of a series of per-run throughputs (oldest first), in order of index.

    Deterministic (no random permutations). Values must be finite and > 0 (ValueError otherwise).
    Returns [] for a series shorter than max(min_points, MIN_POINTS), for a constant series, and when
    no boundary is significant at `significance`. Segments between change points have at least
    MIN_SEGMENT values.
    """
    if not 0.0 < significance < 1.0:
        raise ValueError(f"significance must be in (0, 1), got {significance}")
    n = len(values)
    if n < max(min_points, MIN_POINTS):
        return []
    raw = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(raw)) or np.any(raw <= 0):
        raise ValueError("change_points needs finite throughputs > 0")
    y = np.log(raw)
    if float(np.ptp(y)) == 0.0:
        return []

    bounds = [0, *_candidates(y), n]
    while len(bounds) > 2:
        p = [_p_value(y, bounds[i - 1], bounds[i], bounds[i + 1]) for i in range(1, len(bounds) - 1)]
        weakest = int(np.argmax(p))
        if p[weakest] <= significance:
            break
        del bounds[weakest + 1]

    out = []
    for i in range(1, len(bounds) - 1):
        a, b, c = bounds[i - 1], bounds[i], bounds[i + 1]
        out.append(
            ChangePoint(
                index=b,
                mean_before=float(raw[a:b].mean()),
                mean_after=float(raw[b:c].mean()),
                ratio=math.exp(float(y[b:c].mean() - y[a:b].mean())),
                p_value=_p_value(y, a, b, c),
                n_before=b - a,
                n_after=c - b,
            )
        )
    return out


def _candidates(y: np.ndarray) -> list[int]:
    """PELT's boundaries at a lenient penalty (half of BIC's 2·σ²·ln n): weak change points for the merge
    step to test. σ is estimated from the run-to-run differences (median absolute deviation), which a
    few steps do not inflate the way they inflate the plain standard deviation."""
    import ruptures  # lazy: keeps `pytest --help` fast

    diffs = np.diff(y)
    sigma = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2)
    if sigma == 0.0:  # most neighbours equal (a deterministic fake engine): fall back to the whole spread
        sigma = float(np.std(y))
    pen = sigma**2 * math.log(len(y))
    algo = ruptures.Pelt(model="l2", min_size=MIN_SEGMENT, jump=1).fit(y)
    breaks: list[int] = [int(b) for b in algo.predict(pen=pen)]
    return breaks[:-1]  # ruptures ends the list with len(y)


def _p_value(y: np.ndarray, a: int, b: int, c: int) -> float:
    """Two-sided pooled t test of y[a:b] against y[b:c], times the number of places a boundary could go
    in y[a:c] (each side at least MIN_SEGMENT), capped at 1."""
    from scipy.stats import t as student_t  # lazy, like ruptures

    left, right = y[a:b], y[b:c]
    n1, n2 = len(left), len(right)
    diff = float(right.mean() - left.mean())
    ss = float(((left - left.mean()) ** 2).sum() + ((right - right.mean()) ** 2).sum())
    df = n1 + n2 - 2
    if ss == 0.0:  # no noise on either side: any difference is certain
        p = 0.0 if diff != 0.0 else 1.0
    else:
        tstat = abs(diff) / math.sqrt(ss / df * (1 / n1 + 1 / n2))
        p = 2.0 * float(student_t.sf(tstat, df))
    places = (c - a) - 2 * MIN_SEGMENT + 1
    return min(1.0, p * places)
