"""Accuracy parity statistics with known numbers: paired (Newcombe) and unpaired intervals, the
non-inferiority verdict, the floor, greedy agreement; and lm-eval's own parser accepts our command lines."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_infer.tiny import arith

if TYPE_CHECKING:
    from pytest_infer.accuracy.lmeval import Task
    from pytest_infer.matrix import AccuracySpec
from pytest_infer.analysis.parity import (
    agreement,
    agreement_check,
    floor_check,
    non_inferiority,
    paired_difference,
    unpaired_difference,
    wilson,
)


def _outcomes(both: int, only_s: int, only_r: int, neither: int) -> tuple[dict[str, int], dict[str, int]]:
    cells = [(1, 1)] * both + [(1, 0)] * only_s + [(0, 1)] * only_r + [(0, 0)] * neither
    return ({str(i): s for i, (s, _) in enumerate(cells)}, {str(i): r for i, (_, r) in enumerate(cells)})


def test_wilson_matches_the_closed_form() -> None:
    k, n, z = 81, 263, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(k, n, 0.95) == pytest.approx((centre - half, centre + half), abs=1e-9)


def test_newcombe_paired_interval_follows_the_textbook_formula() -> None:
    """Altman et al., Statistics with Confidence (2000), Table 6.2: 14 both, 5 first only, 0 second only,
    22 neither (n=41). Method 10 written out here from its definition, with closed-form Wilson bounds."""
    s, r = _outcomes(14, 5, 0, 22)
    d = paired_difference(s, r, 0.95)
    n, z = 41, 1.959963984540054

    def wil(k: int) -> tuple[float, float]:
        p = k / n
        c, h = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (c - h) / (1 + z * z / n), (c + h) / (1 + z * z / n)

    p1, p2 = 19 / 41, 14 / 41
    (l1, u1), (l2, u2) = wil(19), wil(14)
    cross = 14 * 22 - 5 * 0 - n / 2  # > n/2: continuity-corrected
    phi = cross / math.sqrt(19 * 22 * 14 * 27)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    assert d.diff == pytest.approx(5 / 41)
    assert (d.low, d.high) == pytest.approx((low, high), abs=1e-9)
    assert 0 < d.low < 5 / 41 < d.high < 0.3  # 5 discordant pairs, all one way: the difference is real
    assert d.only_stack == 5 and d.only_ref == 0 and d.n == 41


def test_identical_answers_still_get_an_interval_that_shrinks_with_n() -> None:
    small = paired_difference(*_outcomes(180, 0, 0, 20))
    large = paired_difference(*_outcomes(1800, 0, 0, 200))
    assert small.diff == 0 and small.low < 0 < small.high
    assert large.high - large.low < small.high - small.low
    # all wrong on both sides (an untrained model): the interval is the Wilson bound, not a point
    none = paired_difference(*_outcomes(0, 0, 0, 300))
    assert none.low == pytest.approx(-wilson(0, 300, 0.95)[1], abs=1e-9) and none.high > 0


def test_paired_interval_is_antisymmetric_and_covers_at_its_confidence() -> None:
    d = paired_difference(*_outcomes(150, 10, 25, 15))
    e = paired_difference(*_outcomes(150, 25, 10, 15))
    assert (d.diff, d.low, d.high) == pytest.approx((-e.diff, -e.high, -e.low))
    # Coverage, simulated: correlated pairs with a true difference of -0.03 (stack 0.87, reference 0.90).
    rng = random.Random(7)
    covered, runs, n = 0, 400, 300
    for _ in range(runs):
        s, r = {}, {}
        for i in range(n):
            u = rng.random()
            r[str(i)] = int(u < 0.90)
            s[str(i)] = int(u < 0.87) if rng.random() < 0.9 else int(rng.random() < 0.87)
        got = paired_difference(s, r)
        true = sum(s.values()) / n - sum(r.values()) / n  # noqa: F841 -- the sample's own difference
        covered += got.low <= -0.03 <= got.high
    assert 0.92 <= covered / runs <= 0.985


def test_unpaired_difference_of_two_published_rows() -> None:
    d = unpaired_difference(0.9545, 0.00574, 0.9591, 0.00546, 1319)
    se = math.hypot(0.00574, 0.00546)
    assert d.diff == pytest.approx(-0.0046)
    assert (d.low, d.high) == pytest.approx((-0.0046 - 1.959964 * se, -0.0046 + 1.959964 * se), abs=1e-6)
    assert d.method == "unpaired normal"


def test_non_inferiority_passes_fails_and_says_when_it_cannot_decide() -> None:
    ok = non_inferiority(paired_difference(*_outcomes(270, 3, 4, 23)), 0.05, "parity vs base", "mtp", "base")
    assert ok.verdict == "pass" and "margin -0.050" in ok.message and "non-inferior" in ok.message
    lossy = paired_difference(*_outcomes(200, 2, 70, 28))  # 70 documents only the reference gets right
    bad = non_inferiority(lossy, 0.02, "parity vs base", "lossy", "base")
    assert bad.verdict == "fail" and bad.value == pytest.approx(-68 / 300)
    assert "lossy 0.6733 vs base 0.9000" in bad.message and "70 only on base" in bad.message
    close = non_inferiority(paired_difference(*_outcomes(80, 1, 3, 16)), 0.03, "parity vs base", "mtp", "base")
    assert close.verdict == "inconclusive" and close.needed is not None and close.needed > 100
    assert f"about {close.needed} documents would decide it" in close.message


def test_floor_is_on_the_point_score_with_its_interval_reported() -> None:
    low = floor_check(0.892, 0.0085, 1319, 0.91, "gsm8k")
    assert low.verdict == "fail" and "gsm8k 0.8920 ± 0.0085 (n=1319), floor 0.910: below the floor" in low.message
    assert floor_check(0.93, 0.007, 1319, 0.91, "gsm8k").verdict == "pass"


def test_agreement_counts_identical_outputs_and_shows_the_first_difference() -> None:
    ref = {p.prompt: p.answer + "\n" for p in arith.problems("test", 40, seed=1)}
    stack = dict(ref)
    changed = sorted(ref)[:5]
    for p in changed:
        stack[p] = "0\n"
    a = agreement(stack, ref)
    assert (a.agree, a.n) == (35, 40) and a.rate == pytest.approx(0.875)
    assert a.low < 0.875 < a.high
    v = agreement_check(a, 0.9, "mtp", "base")
    assert v.verdict == "fail" and "35/40 greedy outputs identical" in v.message
    assert f"first difference: {changed[0]!r}" in v.message
    assert agreement_check(agreement(ref, ref), 0.9, "mtp", "base").verdict == "pass"


def _task(spec: AccuracySpec) -> Task:
    """The spec's task as a run resolves it: arith comes with the tiny model's builder."""
    from pytest_infer.accuracy.lmeval import Task
    from pytest_infer.builder import load_builder

    return Task(spec, load_builder("pytest_infer.tiny") if spec.task == "arith" else None)


def test_lm_eval_accepts_our_command_lines_and_tasks(tmp_path: Path) -> None:
    """Our argv through lm-eval's own CLI parser, and our task files through its task loader (the GSM8K
    task config only: its data would come from the hub, which tests never touch)."""
    pytest.importorskip("lm_eval")
    from lm_eval._cli import HarnessCLI
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    from pytest_infer.accuracy.lmeval import GSM8K, lm_eval_argv
    from pytest_infer.matrix import AccuracySpec
    from pytest_infer.tiny.task import ARITH

    gsm = AccuracySpec(task=GSM8K, api="chat", num_fewshot=5, max_tokens=4096, concurrency=32)
    tiny = AccuracySpec(task=ARITH, api="completions", samples=50, max_tokens=8, concurrency=8)
    for spec in (gsm, tiny):
        task_file = _task(spec).write(tmp_path / spec.task)
        assert task_file is not None and not list(task_file.parent.glob("*.tmp"))
        argv = _task(spec).argv("http://127.0.0.1:8000", "served", tmp_path / "out", tmp_path / "cache", task_file)
        args = HarnessCLI()._parser.parse_args(argv)
        assert args.tasks == [spec.task] and args.log_samples and args.use_cache == str(tmp_path / "cache")
        assert args.model == ("local-chat-completions" if spec.api == "chat" else "local-completions")
        manager = TaskManager(include_path=str(task_file.parent))
        assert spec.task in manager.all_tasks
        config = load_yaml(task_file)  # the YAML as lm-eval resolves it (include: followed)
        assert config["output_type"] == "generate_until"
    assert args.num_fewshot is None and args.limit is None  # arith: the set itself is the sample
    gsm_args = HarnessCLI()._parser.parse_args(lm_eval_argv(gsm, "http://h:1", "m", tmp_path, tmp_path, None))
    assert gsm_args.num_fewshot == 5 and gsm_args.apply_chat_template
    assert gsm_args.model_args["base_url"] == "http://h:1/v1/chat/completions"
    assert gsm_args.model_args["num_concurrent"] == 32 and gsm_args.model_args["tokenized_requests"] is False
    assert gsm_args.gen_kwargs["max_gen_toks"] == 4096 and gsm_args.gen_kwargs["temperature"] == 0
    gsm_config = load_yaml(tmp_path / GSM8K / f"{GSM8K}.yaml")
    assert gsm_config["dataset_path"] == "openai/gsm8k" and gsm_config["num_fewshot"] == 5
    assert "#### [number]" in gsm_config["doc_to_text"] and gsm_config["test_split"] == "test"
    # The arith task is built for real from its local JSONL (offline): its documents and its scorer.
    task = TaskManager(include_path=str(tmp_path / ARITH)).load([ARITH])["tasks"][ARITH]
    docs = list(task.test_docs())
    assert len(docs) == 50 and task.doc_to_text(docs[0]) == arith.problems("test", 50)[0].prompt
    assert task.doc_to_target(docs[0]) == arith.problems("test", 50)[0].answer


def test_published_rows_group_by_gpu_engine_and_model_family() -> None:
    from pytest_infer.replay.evals import EvalRow, family, group, stack_of

    assert family("nvidia/DeepSeek-R1-0528-FP4-V2") == family("deepseek-ai/DeepSeek-R1-0528") == "deepseek-r1-0528"
    assert family("amd/DeepSeek-R1-0528-MXFP4-Preview") == "deepseek-r1-0528"
    kinds, opts = ["b200", "mi355x"], ["fp4", "disagg", "wideep", "mtp"]

    def row(**kw: object) -> EvalRow:
        base: dict[str, object] = {"model": "deepseek-ai/DeepSeek-R1-0528", "hw": "B200-TRT", "framework": "trt",
                                   "precision": "fp8", "task": "gsm8k", "score": 0.95, "score_se": 0.006,
                                   "n_eff": 1319, "spec_decoding": "none", "dp_attention": "false"}
        return EvalRow.model_validate({**base, **kw})

    s = stack_of(row(precision="fp4", spec_decoding="mtp", dp_attention="true"), kinds, opts, "x")
    assert s is not None and s.id == "b200-trt-fp4+mtp@deepseek-r1-0528-dpa"
    rows = [("a", row(score=0.96, score_se=0.005)), ("b", row(score=0.94, score_se=0.007)),
            ("c", row(hw="MI355X"))]
    got = group(rows, kinds, opts, "b200", None)
    (only,) = got.values()
    assert only.score == pytest.approx(0.95) and only.stderr == pytest.approx(math.sqrt((0.005**2 + 0.007**2) / 2))
    assert only.n == 1319 and "mean of 2 runs" in only.note and not only.paired


def test_task_files_rewritten_by_other_workers_are_never_read_half_written(tmp_path: Path) -> None:
    """Under xdist every worker writes the same task files while another's lm-eval reads them."""
    import threading

    import yaml

    from pytest_infer.tiny.task import write_arith_task

    path = write_arith_task(tmp_path / "arith.yaml", 200)
    data = tmp_path / "arith-test.jsonl"
    stop, seen = threading.Event(), []

    def rewrite() -> None:
        while not stop.is_set():
            write_arith_task(tmp_path / "arith.yaml", 200)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(300):
            seen.append((isinstance(yaml.safe_load(path.read_text()), dict), len(data.read_text().splitlines())))
    finally:
        stop.set()
        writer.join()
    assert all(ok and lines == 200 for ok, lines in seen), [s for s in seen if s != (True, 200)][:3]


def test_the_task_key_covers_the_task_and_its_data_not_the_rest_of_the_directory(tmp_path: Path) -> None:
    """The key that stored accuracy results are filed under: unchanged by another model's task or another
    worker's temp file beside it (xdist), changed by a different problem set."""
    import threading

    from pytest_infer.accuracy.lmeval import task_hash
    from pytest_infer.matrix import AccuracySpec
    from pytest_infer.tiny.task import write_arith_task

    spec = AccuracySpec(task="arith", api="completions", samples=50)
    path = _task(spec).write(tmp_path)
    assert path is not None
    key = task_hash(spec, path)
    (tmp_path / "gsm8k.yaml").write_text("task: gsm8k\n")
    stop = threading.Event()

    def rewrite() -> None:  # leaves arith-test.jsonl*.tmp files appearing and vanishing
        while not stop.is_set():
            write_arith_task(tmp_path / "arith.yaml", 50)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        keys = {task_hash(spec, path) for _ in range(200)}
    finally:
        stop.set()
        writer.join()
    assert keys == {key}
    other = tmp_path / "other"
    assert task_hash(spec, write_arith_task(other / "arith.yaml", 49)) != key  # other data (the spec is the same)
