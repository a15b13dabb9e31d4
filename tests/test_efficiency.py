"""Stacking efficiency (analysis/efficiency.py) against a hand computation on real numbers: base, disagg, mtp and
disagg+mtp measured interleaved on the real vLLM CPU engine (tests/data/efficiency, provenance inside)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.interpolate import PchipInterpolator

from pytest_infer.analysis.curve import Sweeps
from pytest_infer.analysis.efficiency import stacking_efficiency

pytest_plugins = ["pytester"]
DATA = json.loads((Path(__file__).resolve().parent / "data" / "efficiency" / "cpu-disagg-mtp-2026-12-03.json")
                  .read_text())["stacks"]
NAMES = ["cpu-vllm-disagg+mtp", "cpu-vllm-base", "cpu-vllm-disagg", "cpu-vllm-mtp"]  # stack, base, parts


def _by_hand(levels: list[dict[str, Any]], block: str) -> tuple[list[float], list[float]]:
    """One round's frontier, written out: highest interactivity first, keep a point only if it has more
    throughput than every point at higher interactivity; then ascending."""
    pts = sorted(((lv["interactivity"], lv["per_gpu_throughput"]) for lv in levels if lv["block"] == block),
                 reverse=True)
    kept, best = [], -1.0
    for x, y in pts:
        if y > best:
            kept.append((x, y))
            best = y
    kept.reverse()
    return [x for x, _ in kept], [y for _, y in kept]


def test_efficiency_of_disagg_and_mtp_matches_the_hand_computation() -> None:
    sweeps = [Sweeps.from_records(n, DATA[n]) for n in NAMES]
    got = {e.concurrency: e for e in stacking_efficiency(sweeps[0], sweeps[1], sweeps[2:])}
    blocks = sorted({lv["block"] for lv in DATA[NAMES[0]]})
    assert len(blocks) == 3 and sorted(got) == [4, 16, 64]
    for conc, e in got.items():
        logs, xs = [], []
        for block in blocks:
            curves = [_by_hand(DATA[n], block) for n in NAMES]
            lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
            reached = next(lv["interactivity"] for lv in DATA[NAMES[0]]
                           if lv["block"] == block and lv["concurrency"] == conc)
            x = min(max(reached, lo), hi)
            s, b, d, m = (float(PchipInterpolator(cx, cy)(x)) for cx, cy in curves)
            logs.append(math.log(s * b / (d * m)))  # (S/B) / ((D/B)(M/B)) for a pair
            xs.append(x)
        mean = float(np.mean(logs))
        half = stats.t.ppf(0.975, len(logs) - 1) * float(np.std(logs, ddof=1)) / math.sqrt(len(logs))
        assert e.interval.ratio == pytest.approx(math.exp(mean), rel=1e-9), conc
        assert (e.interval.low, e.interval.high) == pytest.approx((math.exp(mean - half), math.exp(mean + half)),
                                                                  rel=1e-9), conc
        assert e.interactivity == pytest.approx(math.exp(float(np.mean(np.log(xs)))), rel=1e-9)
        assert e.interval.method == "paired t" and e.interval.n_a == 3
    # What these numbers say (printed with -s): on two cores disagg alone keeps ~0.14 of base's throughput
    # and mtp alone loses some too, but together they lose less than the product of both losses would
    # (E 2.10 [0.76, 5.82] at c=4, 1.37 [1.07, 1.77] at c=64): the losses overlap rather than compound.
    print({c: f"{e.interval.ratio:.3f} [{e.interval.low:.3f}, {e.interval.high:.3f}]" for c, e in got.items()})


def test_a_single_optimization_has_no_efficiency() -> None:
    sweeps = [Sweeps.from_records(n, DATA[n]) for n in NAMES[:3]]
    with pytest.raises(ValueError, match="two or more"):
        stacking_efficiency(sweeps[2], sweeps[1], sweeps[2:])


def test_the_composability_report_carries_the_efficiency(pytester: pytest.Pytester) -> None:
    """The same four real measurements as a results store, replayed: the stack's row, its JUnit properties and
    composability.md show its lowest efficiency with the interval, the number the analysis gives."""
    store = Path(__file__).resolve().parent / "data" / "efficiency" / "store"
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "composability", "--results", str(store),
                                           "--report-dir", str(pytester.path / "r"), "-p", "no:cacheprovider")
    assert result.ret == 1  # disagg, mtp and disagg+mtp lose to base on two cores
    sweeps = [Sweeps.from_records(n, DATA[n]) for n in NAMES]
    worst = min(stacking_efficiency(sweeps[0], sweeps[1], sweeps[2:]), key=lambda e: e.interval.ratio)
    junit = ET.parse(pytester.path / "r" / "cpu" / "junit-composability.xml")
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_composability[cpu-vllm-disagg+mtp]"].iter("property")}
    assert float(props["efficiency"] or 0) == pytest.approx(worst.interval.ratio, abs=1e-4)
    assert float(props["efficiency_low"] or 0) == pytest.approx(worst.interval.low, abs=1e-4)
    assert "efficiency" not in {p.get("name") for p in cases["test_composability[cpu-vllm-mtp]"].iter("property")}
    md = (pytester.path / "r" / "cpu" / "composability.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| `cpu-vllm-disagg+mtp`"))
    assert "stacking efficiency [interval] at tok/s/user" in md
    assert f"{worst.interval.ratio:.2f} [{worst.interval.low:.2f}, {worst.interval.high:.2f}] at " in row, row


def test_a_larger_stack_is_held_to_its_best_predicting_sub_stacks() -> None:
    """Hand computation: gains over base at both levels A 2.0, B 1.5, C 1.2, AB 2.5, AC 2.2, BC 1.6, ABC 3.0.
    Predictions: A.B.C 3.6 (E 0.833, the plain efficiency), AB.C 3.0 (1.0), AC.B 3.3 (0.909), A.BC 3.2
    (0.9375): the best prediction among the splits with a measured pair is AC x B."""
    from pytest_infer.analysis.efficiency import against_best_prediction, partitions

    gains = {"base": 1.0, "a": 2.0, "b": 1.5, "c": 1.2, "a+b": 2.5, "a+c": 2.2, "b+c": 1.6, "a+b+c": 3.0}
    sw = {n: Sweeps.from_records(n, [{"concurrency": 1, "interactivity": 50.0, "per_gpu_throughput": 100 * g},
                                     {"concurrency": 2, "interactivity": 20.0, "per_gpu_throughput": 200 * g}])
          for n, g in gains.items()}
    assert len(partitions(["a", "b", "c"])) == 4 and len(partitions(["a", "b", "c", "d"])) == 14
    plain = stacking_efficiency(sw["a+b+c"], sw["base"], [sw["a"], sw["b"], sw["c"]])
    assert [round(e.interval.ratio, 4) for e in plain] == [0.8333, 0.8333]
    got = against_best_prediction(sw["a+b+c"], sw["base"], ["a", "b", "c"], sw)
    assert got is not None
    split, effs = got
    assert split == "a+c x b" and [round(e.interval.ratio, 4) for e in effs] == [0.9091, 0.9091]
    del sw["a+c"]  # unmeasured: the next best prediction among the measured splits
    got = against_best_prediction(sw["a+b+c"], sw["base"], ["a", "b", "c"], sw)
    assert got is not None and got[0] == "a x b+c" and round(got[1][0].interval.ratio, 4) == 0.9375
