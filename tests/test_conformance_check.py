"""The conformance suite through pytester: a lossy stack fails parity with its numbers (fake servers that
answer the arithmetic task, one corrupting a share of answers: this file only), and the InferenceX
gsm8k-evals fixture replays FP4-versus-FP8 parity with the unpaired interval."""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
FAKES = Path(__file__).resolve().parent / "fakes"
DATA = Path(__file__).resolve().parent / "data" / "inferencex"

FAKE_ENGINE = """
name: fake
package: [aiohttp]
serve: [{python}, {server}, "${{model}}"]
router: {{argv: [{python}, -m, pytest_infer.launch.router, --host, "${{host}}", --port, "${{port}}"]}}
common:
  args: [--host, "${{host}}", --port, "${{port}}"]
  env: {{FAKE_ARITH: "1"}}
optimizations:
  mtp: {{env: {{FAKE_SPEC_ACCEPT: "0.6", FAKE_SPEC_ACCEPT_PAST_ANSWER: "0.1"}}}}
  lossy: {{env: {{FAKE_CORRUPT: "0.2"}}}}
{broken}gpus:
  cpu: {{unsupported: {{}}}}
"""


def _matrices(root: Path, floor: float = 0.9, known_broken: str = "") -> Path:
    """Optimizations mtp and lossy; with `known_broken` (registry YAML) also broken, whose server starts
    and then answers every request with a 500."""
    root.mkdir(parents=True)
    (root / "engines").mkdir()
    (root / "gpus.yaml").write_text("gpus:\n  cpu: {vendor: cpu, arch: x86-64, memory_gb: null, "
                                    "gpus_per_node: 2, scale_up_domain: 2, fp4: false}\n")
    (root / "optimizations.yaml").write_text(
        "optimizations:\n  mtp: {summary: mtp, output_agreement: 0.9}\n"
        "  lossy: {summary: declared lossless but corrupts answers, output_agreement: 0.95}\n"
        + ("  broken: {summary: starts then answers 500, output_agreement: 0.95}\n" if known_broken else ""))
    (root / "models.yaml").write_text(
        "models:\n  fake-arith:\n    checkpoints: {fp8: {default: fake-arith}}\n"
        "    accuracy: {task: arith, api: completions, samples: 200, max_tokens: 8, concurrency: 4,"
        " parity_prompts: 40, parity_max_tokens: 8, writer: pytest_infer.tiny}\n"
        f"    accuracy_floor: {{arith: {floor}}}\n"
        "defaults:\n  cpu: {model: fake-arith, tensor_parallel: 1}\n")
    (root / "workloads.yaml").write_text("workloads:\n  cpu: {input_len: 8, output_len: 8, concurrency: [1]}\n")
    (root / "known_broken.yaml").write_text(known_broken or "known_broken: []\n")
    (root / "engines" / "fake.yaml").write_text(FAKE_ENGINE.format(python=sys.executable,
                                                                   server=FAKES / "openai_server.py",
                                                                   broken='  broken: {env: {FAKE_FAIL: "1"}}\n'
                                                                   if known_broken else ""))
    return root


def _props(junit: Path) -> dict[str, dict[str, str]]:
    cases = {c.get("name") or "": c for c in ET.parse(junit).getroot().iter("testcase")}
    return {name: {p.get("name") or "": p.get("value") or "" for p in c.iter("property")} for name, c in cases.items()}


def test_a_lossy_stack_fails_parity_and_agreement_with_its_numbers(pytester: pytest.Pytester) -> None:
    """lossy answers 20% of the prompts wrong (by a hash of the prompt): against base it must fail the
    paired non-inferiority check and the output agreement, each with its numbers; mtp (same answers)
    passes. The accuracy comes from real lm-eval runs against the fake servers. Under xdist (as an
    engine's CI runs it, -n 8) every deployment is evaluated once though three tests need base."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("xdist")
    matrices = _matrices(pytester.path / "m")
    reports = pytester.path / "r"
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "conformance", "--infer-matrices",
                                           str(matrices), "--report-dir", str(reports), "-p", "no:cacheprovider",
                                           "--junitxml", str(pytester.path / "j.xml"), "-o", "junit_family=xunit1",
                                           "-n", "2", timeout=900)
    out = result.stdout.str()
    result.assert_outcomes(passed=2, failed=2)
    launches = (reports / "cpu" / "launches.log").read_text().splitlines()
    assert sorted(ln.split()[-1] for ln in launches) == ["cpu-fake-base", "cpu-fake-lossy", "cpu-fake-mtp",
                                                         "cpu-fake-mtp+lossy"], launches
    assert len({ln.split()[1] for ln in launches}) == 1  # one run id shared by both workers
    assert "cpu-fake-lossy conformance: arith 0.8" in out
    assert "parity vs base: fail: lossy 0.8" in out and "vs base 1.0000: difference -0.1" in out
    assert "margin -0.020: the stack loses more accuracy than the margin allows" in out
    assert "output agreement: fail: lossy vs base:" in out and "threshold 0.950" in out
    props = _props(pytester.path / "j.xml")
    lossy = props["test_conformance[cpu-fake-lossy]"]
    row = json.loads(lossy["infer"])
    parity = next(c for c in row["checks"] if c["check"] == "parity vs base")
    assert parity["method"] == "paired Newcombe" and parity["n"] == 200
    assert parity["high"] < -0.02 and parity["low"] <= parity["value"] <= parity["high"]
    assert -0.3 < parity["value"] < -0.1 and float(lossy["score"]) == pytest.approx(1 + parity["value"])
    agree = next(c for c in row["checks"] if c["check"] == "output agreement")
    assert 0.6 < agree["value"] < 0.95 and agree["n"] == 40
    mtp = props["test_conformance[cpu-fake-mtp]"]
    assert mtp["parity_vs_base"] == "pass" and mtp["output_agreement_value"] == "1.0"
    # Acceptance over lm-eval's task only: the greedy prompts that follow run past the answer, where the
    # fake accepts 0.1 (as the tiny model's untrained continuation does); pooled with them it read 0.29
    # (152 of 520 drafts).
    assert float(mtp["mtp_acceptance_rate"]) == pytest.approx(0.6)
    assert mtp["floor"] == "pass" and float(mtp["score"]) == 1.0 and mtp["n"] == "200"
    md = (reports / "cpu" / "conformance.md").read_text()
    rows = {ln.split("|")[1].strip(" `"): ln for ln in md.splitlines() if ln.startswith("| `")}
    assert set(rows) == {"cpu-fake-base", "cpu-fake-mtp", "cpu-fake-lossy", "cpu-fake-mtp+lossy"}
    assert "FAIL" in rows["cpu-fake-lossy"] and "PASS" in rows["cpu-fake-mtp"] and "0.600" in rows["cpu-fake-mtp"]
    # Per-sample outcomes are stored; a second run reuses them and launches nothing.
    stored = json.loads(next((reports / "cpu" / "results" / "accuracy").glob("cpu-fake-lossy-*.json")).read_text())
    assert len(stored["samples"]) == 200 and sum(stored["samples"].values()) == round(200 * stored["score"])
    again = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "conformance", "--infer-matrices",
                                          str(matrices), "--report-dir", str(reports), "-p", "no:cacheprovider",
                                          timeout=600)
    again.assert_outcomes(passed=2, failed=2)
    assert "reusing stored accuracy" in again.stdout.str() and "launching" not in again.stdout.str()
    # The store replays paired, with no engine.
    replay = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "conformance", "--infer-matrices",
                                           str(matrices), "--report-dir", str(pytester.path / "r2"),
                                           "--results", str(reports / "cpu" / "results"), "-p", "no:cacheprovider",
                                           timeout=600)
    replay.assert_outcomes(passed=2, failed=2)
    assert "paired Newcombe" in replay.stdout.str() and "launching" not in replay.stdout.str()


def test_known_broken_stack_xfails_and_bigger_stacks_are_not_launched(pytester: pytest.Pytester) -> None:
    """As in the composability suite: broken fails (xfail, with the root cause from its log), so
    mtp+broken, broken under the same entry, is not launched (each failed launch costs minutes on cpu)."""
    pytest.importorskip("lm_eval")
    matrices = _matrices(pytester.path / "m", known_broken=(
        "known_broken:\n  - {stack: broken, engine: fake, gpus: [cpu], kind: runtime, "
        "issue: https://example.org/issue/1, failure: every request answers 500}\n"))
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "conformance", "--infer-matrices",
                                           str(matrices), "--report-dir", str(pytester.path / "r"),
                                           "--stack", "not lossy", "-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=2, xfailed=2)
    out = result.stdout.str()
    assert "cpu-fake-broken: launching" in out and "cpu-fake-mtp+broken: launching" not in out
    md = (pytester.path / "r" / "cpu" / "conformance.md").read_text()
    rows = {ln.split("|")[1].strip(" `"): ln for ln in md.splitlines() if ln.startswith("| `")}
    assert "NotImplementedError: fake all_gatherv" in rows["cpu-fake-broken"]
    assert ("not launched: its part cpu-fake-broken fails under the same known-broken entry"
            in rows["cpu-fake-mtp+broken"])
    # Failed on one request before lm-eval, which would have retried each of its 200 with backoff.
    stored = json.loads(next((pytester.path / "r" / "cpu" / "results" / "accuracy").glob("cpu-fake-broken-*.json"))
                        .read_text())
    assert stored["status"] == "failed" and stored["eval_s"] == 0
    assert "first request, before lm-eval: POST /v1/completions answered 500" in stored["error"], stored["error"]


def _fixture_rows(hw: str, framework: str, family: str, precision: str) -> list[dict[str, object]]:
    rows = json.loads((DATA / "gsm8k-evals.json").read_text())
    return [r for r in rows if str(r["hw"]).split("-")[0] == hw and r["framework"] == framework
            and family in str(r["model"]) and r["precision"] == precision
            and str(r["spec_decoding"]) in ("none", "") and str(r["dp_attention"]) != "true"]


def test_gsm8k_evals_replay_fp4_against_fp8_per_gpu_engine_and_model(pytester: pytest.Pytester) -> None:
    results = pytester.path / "evals"
    results.mkdir()
    (results / "gsm8k-evals.json").write_text((DATA / "gsm8k-evals.json").read_text())
    reports = pytester.path / "r"
    result = pytester.runpytest_subprocess("--gpu", "b200", "--suite", "conformance", "--results", str(results),
                                           "--report-dir", str(reports), "-p", "no:cacheprovider",
                                           "--junitxml", str(pytester.path / "j.xml"), "-o", "junit_family=xunit1")
    out = result.stdout.str()
    props = _props(pytester.path / "j.xml")
    # Expected numbers straight from the fixture: runs of one stack pooled (mean score, RMS stderr).
    fp4 = _fixture_rows("B200", "sglang", "DeepSeek-R1", "fp4")
    fp8 = _fixture_rows("B200", "sglang", "DeepSeek-R1", "fp8")
    assert fp4 and fp8

    def pool(rows: list[dict[str, object]]) -> tuple[float, float]:
        scores = [float(str(r["score"])) for r in rows]
        ses = [float(str(r["score_se"])) for r in rows]
        return sum(scores) / len(scores), math.sqrt(sum(s * s for s in ses) / len(ses))

    (s4, e4), (s8, e8) = pool(fp4), pool(fp8)
    diff, half = s4 - s8, 1.959964 * math.hypot(e4, e8)
    case = props["test_conformance[b200-sglang-fp4@deepseek-r1-0528]"]
    row = json.loads(case["infer"])
    parity = next(c for c in row["checks"] if c["check"] == "parity vs base")
    assert parity["method"] == "unpaired normal"
    assert parity["value"] == pytest.approx(diff, abs=1e-9)
    assert (parity["low"], parity["high"]) == pytest.approx((diff - half, diff + half), abs=1e-5)
    assert parity["threshold"] == -0.03  # fp4's margin against fp8 (optimizations.yaml)
    assert row["score"] == pytest.approx(round(s4, 4)) and case["floor"] == "pass"  # DeepSeek-R1 floor 0.91
    assert "unpaired normal" in out or case["parity_vs_base"] == "pass"
    # Every GPU kind's own rows only; engines the matrices lack (sglang, trt) replay too.
    names = set(props)
    assert "test_conformance[b200-trt-fp4@deepseek-r1-0528]" in names
    assert not any("h200" in n or "mi355x" in n for n in names)
    md = (reports / "b200" / "conformance.md").read_text()
    assert "`b200-sglang-fp4@deepseek-r1-0528`" in md and " unpaired " in md
    assert "launching" not in out


def test_bad_accuracy_rows_and_specs_are_one_line_errors(pytester: pytest.Pytester) -> None:
    results = pytester.path / "bad"
    results.mkdir()
    (results / "evals.json").write_text(json.dumps([{"model": "m", "hw": "B200", "framework": "vllm",
                                                     "precision": "fp4", "task": "gsm8k", "score": 0.9,
                                                     "n_eff": 10}]))
    result = pytester.runpytest_subprocess("--gpu", "b200", "--suite", "conformance", "--results", str(results),
                                           "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{results / 'evals.json'}: row 0: field 'score_se': Field required*"])
    empty = pytester.path / "empty"
    empty.mkdir()
    (empty / "x.json").write_text("[]")
    result = pytester.runpytest_subprocess("--gpu", "b200", "--suite", "conformance", "--results", str(empty),
                                           "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no accuracy results*"])
    matrices = _matrices(pytester.path / "m")
    models = matrices / "models.yaml"
    models.write_text(models.read_text().replace("api: completions", "api: grpc"))
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "conformance", "--infer-matrices",
                                           str(matrices), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{models}: key models.fake-arith.accuracy.api: *"])
