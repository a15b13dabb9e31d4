"""The ratio of two throughputs measured with repeats: a confidence interval and a three-way verdict.

Throughput noise is multiplicative, so ratios are taken in log space: a Welch t interval on the
difference of mean logs for few repeats, a bootstrap of the same statistic for more. One sample per
side (replayed single runs) gives a point estimate that says it has no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["t", "bootstrap", "point"]
Decision = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class RatioInterval:
    ratio: float  # geometric-mean ratio a / b
    low: float
    high: float
    n_a: int
    n_b: int
    method: Method
    confidence: float

    def decide(self, threshold: float) -> Decision:
        """pass: the whole interval is at or above `threshold`; fail: all of it below; else inconclusive."""
        if self.method == "point":
            return "pass" if self.ratio >= threshold else "fail"
        if self.low >= threshold:
            return "pass"
        return "fail" if self.high < threshold else "inconclusive"

    def repeats_to_decide(self, threshold: float) -> int | None:
        """Repeats per side that would shrink the interval off the threshold, if the estimate and the
        spread hold (width ~ 1/sqrt(n)); None when the estimate sits on the threshold."""
        half = (math.log(self.high) - math.log(self.low)) / 2
        gap = abs(math.log(self.ratio) - math.log(threshold))
        if gap < 1e-9 or self.method == "point":
            return None
        n = min(self.n_a, self.n_b)
        return max(n + 1, math.ceil(n * (half / gap) ** 2))

    def __str__(self) -> str:
        if self.method == "point":
            return f"{self.ratio:.3f} (one sample per side: no interval)"
        return (f"{self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.confidence:.0%} {self.method} "
                f"interval, n={self.n_a}/{self.n_b})")


def ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                   bootstrap_from: int = 10, seed: int = 0, session_noise: float = 0.0) -> RatioInterval:
    """Interval on mean(a)/mean(b) (geometric means) for positive samples a, b.

    `session_noise` is the log-SD of the ratio of two measurements of one deployment taken at different
    times, beyond what their repeats show (a machine that drifts between sessions); it widens the
    interval in quadrature. It comes from an A/A calibration (benchmarks/aa_calibration.py)."""
    la, lb = np.log(np.asarray(a, dtype=float)), np.log(np.asarray(b, dtype=float))
    diff = float(la.mean() - lb.mean())
    ratio = math.exp(diff)
    if len(la) < 2 or len(lb) < 2:
        return RatioInterval(ratio, ratio, ratio, len(la), len(lb), "point", confidence)
    from scipy import stats

    if min(len(la), len(lb)) >= bootstrap_from:
        res = stats.bootstrap((la, lb), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
                              confidence_level=confidence, n_resamples=4000, method="BCa",
                              rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        method: Method = "bootstrap"
    elif la.var() == 0 and lb.var() == 0:
        lo = hi = diff  # identical repeats (replayed copies): no spread to speak of
        method = "t"
    else:
        ci = stats.ttest_ind(la, lb, equal_var=False).confidence_interval(confidence)
        lo, hi = float(ci.low), float(ci.high)
        method = "t"
    if session_noise > 0:
        z = float(stats.norm.ppf(0.5 + confidence / 2)) * session_noise
        lo, hi = diff - math.hypot(diff - lo, z), diff + math.hypot(hi - diff, z)
    return RatioInterval(ratio, math.exp(lo), math.exp(hi), len(la), len(lb), method, confidence)
