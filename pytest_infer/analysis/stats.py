"""The ratio of two throughputs measured with repeats: a confidence interval and a three-way verdict.

Throughput noise is multiplicative, so ratios are taken in log space: a Welch t interval on the
difference of mean logs for few repeats, a bootstrap of the same statistic for more. One sample per
side (replayed single runs) gives a point estimate that says it has no interval.

Samples measured in interleaved rounds (one of each side per round, minutes apart at most) are paired:
the interval is on the mean of the per-round log ratios, so what the machine did in a round (a VM
slowing down for a while) cancels instead of widening the interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np


def two_sided_z(confidence: float) -> float:
    """The normal quantile that bounds a two-sided interval at this confidence (1.96 at 0.95)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


Method = Literal["t", "bootstrap", "point", "paired t", "paired bootstrap"]
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
    floor: float = 0.0  # log half-width from session noise: more repeats do not shrink it

    def decide(self, threshold: float) -> Decision:
        """pass: the whole interval is at or above `threshold`; fail: all of it below; else inconclusive."""
        if self.method == "point":
            return "pass" if self.ratio >= threshold else "fail"
        if self.low >= threshold:
            return "pass"
        return "fail" if self.high < threshold else "inconclusive"

    def repeats_to_decide(self, threshold: float) -> int | None:
        """Repeats per side that would shrink the interval off the threshold, if the estimate and the
        spread hold (the sampling part of the width ~ 1/sqrt(n), the session-noise floor fixed); None when
        the floor alone spans the gap (see noise_spans) or the estimate sits on the threshold (more than
        100x the repeats so far: no practical number decides it)."""
        half = (math.log(self.high) - math.log(self.low)) / 2
        gap = abs(math.log(self.ratio) - math.log(threshold))
        if self.method == "point" or self.noise_spans(threshold):
            return None
        sampling2, room2 = max(half ** 2 - self.floor ** 2, 0.0), gap ** 2 - self.floor ** 2
        n = min(self.n_a, self.n_b)
        if sampling2 > 100 * room2:
            return None
        return max(n + 1, math.ceil(n * sampling2 / room2))

    def noise_spans(self, threshold: float) -> bool:
        """The session-noise floor alone reaches from the estimate across the threshold."""
        return self.floor > 0 and abs(math.log(self.ratio) - math.log(threshold)) <= self.floor

    def __str__(self) -> str:
        if self.method == "point":
            return f"{self.ratio:.3f} (one sample per side: no interval)"
        n = f"{self.n_a} rounds" if self.paired else f"n={self.n_a}/{self.n_b}"
        return f"{self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.confidence:.0%} {self.method} interval, {n})"

    @property
    def paired(self) -> bool:
        return self.method.startswith("paired")


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
    z = two_sided_z(confidence) * session_noise
    if z > 0:
        lo, hi = diff - math.hypot(diff - lo, z), diff + math.hypot(hi - diff, z)
    return RatioInterval(ratio, math.exp(lo), math.exp(hi), len(la), len(lb), method, confidence, z)


def paired_ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                          bootstrap_from: int = 10, seed: int = 0) -> RatioInterval:
    """Interval on the geometric mean of a[i]/b[i], pairs measured in the same round: a one-sample t
    interval on the log ratios for few rounds, a bootstrap of their mean for more."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    d = np.log(np.asarray(a, dtype=float)) - np.log(np.asarray(b, dtype=float))
    mean = float(d.mean())
    ratio, n = math.exp(mean), len(d)
    if n < 2:
        return RatioInterval(ratio, ratio, ratio, n, n, "point", confidence)
    from scipy import stats

    method: Method
    if d.var() == 0:
        lo = hi = mean
        method = "paired t"
    elif n >= bootstrap_from:
        res = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=4000, method="BCa",
                              rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        method = "paired bootstrap"
    else:
        ci = stats.ttest_1samp(d, 0.0).confidence_interval(confidence)
        lo, hi = float(ci.low), float(ci.high)
        method = "paired t"
    return RatioInterval(ratio, math.exp(lo), math.exp(hi), n, n, method, confidence)
