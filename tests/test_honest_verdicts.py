"""No lie gets through (issue 13): a level with failed requests is in no curve and never passes, anywhere;
a part's failures show on the stack's row; the saturated flat extension is marked; a replay's errors are
usage errors, and its report describes the data, not this machine. The material is the real InferenceX
files of tests/data/inferencex (PROVENANCE.md), copied and, where a case needs it, edited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from replaydata import json_of, kv_matrices
from test_replay import DATA, KV, OFFLOAD, _copy, _rows, _run

from pytest_infer.analysis.checks import Stats, composability
from pytest_infer.analysis.curve import Point, Sweeps
from pytest_infer.report.markdown import throughput_table
from pytest_infer.report.rows import Row, StackRow
from pytest_infer.store.records import Level
from pytest_infer.suite.base import with_verdict

pytest_plugins = ["pytester"]

DISAGG = DATA / "disagg-16gpu-gpt-oss-120b"
DISAGG_MANIFEST = "- {files: 'concurrency_*.json', stack: disagg, gpus: 16, decode_gpus: 8, variant: NAME}\n"
BASE_MANIFEST = "- {files: 'concurrency_*.json', stack: base, gpus: 16, decode_gpus: 8, variant: gpt}\n"


def _subset(dst: Path, tp: int, on: list[int], off: list[int]) -> Path:
    """The kv-offload files of one TP: offload on at the `on` users, off at the `off` users."""
    dst.mkdir(parents=True)
    for f in OFFLOAD.glob(f"*_tp{tp}_*.json"):
        d = json_of(f)
        if d["users"] in (on if d["offload_mode"] == "on" else off):
            shutil.copy(f, dst / f.name)
    return dst


def test_a_part_with_failed_requests_does_not_pass_and_shows_on_the_stack(pytester: pytest.Pytester) -> None:
    """Case 1 of the issue: offload on at users 2-128, off at 2, 8, 16, 128, 256 (its users-256 level:
    437 of 519 requests failed). Before: `base PASS`, the offload stack `PASS ratio 0.995`."""
    res = _subset(pytester.path / "res" / "kv", 4, [2, 4, 8, 12, 16, 24, 32, 48, 64, 128], [2, 8, 16, 128, 256])
    result = _run(pytester, "b200", res.parent, "--infer-matrices", str(kv_matrices(pytester.path / "m")))
    outcomes = result.parseoutcomes()
    assert "passed" not in outcomes, outcomes
    rows = _rows(pytester, "b200")
    part, stack = rows["b200-vllm-fp4@dsr1-agentic-tp4-ep4"], rows[KV.format(4, 4)]
    assert part["verdict"] == "fail"
    name = "agg_dsr1_tp4_users256_offloadoff_fp4_vllm_tp4-ep4-dpafalse_disagg-false_spec-none_conc256_b200-dgxc-slurm_5"
    assert f"concurrency 256: 437 failed and 82 completed of 519 requests ({name}.json)" in part["message"]
    # the part's failures on the stack's row, and the stack's own (users 64 and 128 lost requests too)
    assert any(item.startswith("part fp4: level(s) that do not count") and "437 failed" in item
               for item in stack["failed_levels"]), stack["failed_levels"]
    assert stack["verdict"] == "fail" and "concurrency 128: 134 failed and 150 completed" in stack["message"]
    # levels with failures are in no curve, but stay in the row with their counts
    lv = next(lv for lv in part["levels"] if lv["concurrency"] == 256)
    assert (lv["completed"], lv["failed"], lv["num_prompts"]) == (82, 437, 519) and lv["problems"]
    md = (pytester.path / "r" / "b200" / "composability.md").read_text()
    assert "Levels that do not count" in md and "82/519 (437 failed), 1 not counted" in md


def test_raw_vllm_file_with_failed_requests_fails_its_stack(pytester: pytest.Pytester) -> None:
    """Case 2: one gpt-oss disagg level edited to `completed: 600, failed: 40` (vLLM 0.32 writes
    `failed`); before, it replayed as `PASS ratio 1.000` against an unedited copy of itself."""
    res = pytester.path / "res"
    _copy(res, DISAGG, manifest=DISAGG_MANIFEST)
    base = res / "base"
    shutil.copytree(DISAGG, base)
    (base / "infer-results.yaml").write_text(BASE_MANIFEST.replace("gpt", DISAGG.name))
    f = res / DISAGG.name / "concurrency_64.json"
    d = json_of(f)
    d.update(completed=600, failed=40)
    f.write_text(json.dumps(d))
    result = _run(pytester, "b200", res)
    result.assert_outcomes(passed=1, failed=1)
    row = _rows(pytester, "b200")[f"b200-vllm-disagg@{DISAGG.name}"]
    assert row["verdict"] == "fail"
    assert "concurrency 64: 40 failed and 600 completed of 640 requests (concurrency_64.json)" in row["message"]
    # the clean levels still compare (the copy of itself): the failure is the data's, not the throughput's
    assert row["worst_ratio"] == pytest.approx(1.0)


def test_a_replay_that_cannot_read_a_file_is_a_usage_error_printed_once(pytester: pytest.Pytester) -> None:
    """Case 6: a level file that is not a result (field missing) is input the replay cannot use: exit 4,
    one line naming the file, not a stack FAIL with the error printed twice."""
    res = pytester.path / "res"
    _copy(res, DISAGG, manifest=DISAGG_MANIFEST)
    f = res / DISAGG.name / "concurrency_8.json"
    d = json_of(f)
    del d["median_tpot_ms"]
    f.write_text(json.dumps(d))
    result = _run(pytester, "b200", res)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in result.errlines if ln.strip()]
    assert errors == [f"ERROR: pytest-infer: {f}: field 'median_tpot_ms' missing"], errors
    assert "FAIL" not in result.stdout.str()


def test_the_report_header_describes_the_replayed_data(pytester: pytest.Pytester) -> None:
    """Case 6: the header named this machine's engine version and model; it names the data's."""
    res = _subset(pytester.path / "res" / "kv", 8, [1, 2, 4], [1, 2, 4])
    shutil.copytree(DATA / "not-results", res.parent / "not-results")  # skipped, and said so
    _run(pytester, "b200", res.parent, "--infer-matrices", str(kv_matrices(pytester.path / "m")))
    md = (pytester.path / "r" / "b200" / "composability.md").read_text()
    head = md.split("\n\n")[1]
    assert "`vllm 0.19.1`" in head and "`nvidia/DeepSeek-R1-0528-FP4`" in head and "GPUs `b200`" in head, head
    assert "0.32" not in head and "tiny" not in head
    assert "; 2 file(s) skipped:" in head, head
    listed = [ln for ln in md.splitlines() if ln.startswith("- ") and "not-results" in ln]
    assert len(listed) == 2 and all("not a result: unknown format" in ln for ln in listed), listed


def _levels(pts: list[tuple[int, float, float]]) -> list[tuple[int, int, Point]]:
    return [(0, c, Point(x, y)) for c, x, y in pts]


def test_the_flat_extension_is_marked_in_the_row_and_the_matrix() -> None:
    """Case 3: a point served by a saturated sweep's flat extension is named so, in the JUnit row and with
    a mark in the markdown matrix."""
    stack = Sweeps.from_levels("fp4+mtp", _levels([(16, 60.0, 1000.0), (32, 50.0, 1010.0)]))  # saturated
    part = Sweeps.from_levels("fp4", _levels([(16, 40.0, 900.0), (32, 30.0, 1200.0)]))
    assert stack.saturated and not part.saturated
    verdict = composability(stack, [part], Stats(tolerance=0.05))
    row = with_verdict(StackRow(stack="b200-vllm-fp4+mtp"), verdict)
    assert row.extended_levels and row.saturation and "saturates" in row.saturation
    md = throughput_table([Row("b200-vllm-fp4+mtp", "failed", "", row)], "best part")
    assert "†" in md and "flat extension of a saturated sweep" in md


def test_a_collapsed_top_level_makes_no_saturation() -> None:
    """Case 3: the top level's requests mostly failed (its throughput collapsed): not in the curve, so the
    sweep is not saturated by it."""
    def lv(c: int, x: float, y: float, failed: int = 0) -> Level:
        return Level(concurrency=c, num_prompts=10 * c, completed=10 * c - failed, failed=failed, duration_s=1,
                     output_throughput=y, total_throughput=y, per_gpu_throughput=y, per_gpu_output_throughput=y,
                     per_decode_gpu_output_throughput=y, interactivity=x, median_ttft_ms=1, median_tpot_ms=1000 / x,
                     median_e2el_ms=1, p99_ttft_ms=1, p99_tpot_ms=1)

    levels = [lv(4, 90, 500), lv(16, 60, 1500), lv(64, 20, 400, failed=500)]
    clean = [x for x in levels if x.ok]
    assert not Sweeps.from_records("s", (x.model_dump() for x in clean)).saturated
    assert Sweeps.from_records("s", (x.model_dump() for x in levels)).saturated  # what it was before


def test_a_dead_level_and_tokens_cut_short_do_not_count() -> None:
    """Case 7, on the level: a file where every request failed is a level with nothing in it (not an
    error), and requests counted as completed with too few tokens make the level not count."""
    dead = Level.from_bench(json_of(DATA / "single-node" / "failed-run_minimaxm2.5_8k1k_conc64.json"), 8, 8, "x.json")
    assert dead.problems()[0].startswith("concurrency 64: every request failed")
    data = json_of(DISAGG / "concurrency_4.json") | {"output_lens": [1024] * 39 + [1], "errors": [""] * 40}
    level = Level.from_bench(data, 16, 8, "c4.json")
    level.expect_at_least(data, 1024)
    assert level.problems() == ["concurrency 4: 1 of 40 completed requests returned fewer output tokens than the "
                                "workload asks for (ignore_eos) (c4.json)"]
    zero = Level.from_bench(json_of(DISAGG / "concurrency_4.json") | {"total_output_tokens": 0}, 16, 8, "c4.json")
    assert "0 output tokens came back" in zero.problems()[0]
