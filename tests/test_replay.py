"""`--results DIR` on results measured elsewhere (InferenceX fixtures, tests/data/inferencex/PROVENANCE.md):
classification into stacks and variants, then the composability suite end to end with no engine. Numbers in
the reports are checked against numbers computed here from the raw files."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from replaydata import json_of, kv_matrices, two_engines
from scipy.interpolate import PchipInterpolator

from pytest_infer.matrix import Matrix, Workload, default_root
from pytest_infer.replay.replay import (
    ReplayError,
    classify,
    gpu_kind,
    is_store,
    measurement,
    opts_of,
    variant_of,
)
from pytest_infer.space import Stack
from pytest_infer.store.records import Level, Measurement
from pytest_infer.store.store import Store

pytest_plugins = ["pytester"]

DATA = Path(__file__).resolve().parent / "data" / "inferencex"
OFFLOAD = DATA / "b200-dsr1-fp4-vllm-kv-offload"
SINGLE = DATA / "single-node"
OPTS = ["fp4", "disagg", "wideep", "mtp"]
KV = "b200-vllm-fp4+kvoffload@dsr1-agentic-tp{}-ep{}"




def _copy(dst: Path, *folders: Path, manifest: str = "") -> Path:
    for src in folders:
        shutil.copytree(src, dst / src.name)
        if manifest:
            (dst / src.name / "infer-results.yaml").write_text(manifest.replace("NAME", src.name))
    return dst


def _run(pytester: pytest.Pytester, gpu: str, results: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--gpu", gpu, "--suite", "composability", "--results", str(results),
                                         "--report-dir", str(pytester.path / "r"), "-p", "no:cacheprovider",
                                         "-rs", *args)


def _rows(pytester: pytest.Pytester, gpu: str) -> dict[str, dict[str, Any]]:
    """The `infer` property of each test case in the JUnit report, by stack id."""
    junit = ET.parse(pytester.path / "r" / gpu / "junit-composability.xml").getroot()
    rows = {}
    for case in junit.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        row = json.loads(props["infer"] or "{}")
        rows[row["stack"]] = row
    return rows


# ---- classification ---------------------------------------------------------------------------------

def test_gpu_kind_from_runner_names() -> None:
    kinds = list(Matrix(default_root()).gpus)
    assert gpu_kind("b200-dgxc-slurm", kinds) == "b200"
    assert gpu_kind("b200-nb", kinds) == "b200"
    assert gpu_kind("MI355-gbt350-odcdh5-wbb3", kinds) == "mi355x"
    assert gpu_kind("mi355x", kinds) == "mi355x"
    assert gpu_kind("gb200-nv72", kinds) == "gb200"
    assert gpu_kind("a100-sxm", kinds) is None
    assert gpu_kind("mi3", kinds) is None  # ambiguous: mi300x, mi325x, mi355x


def test_optimizations_and_variant_from_inferencex_fields() -> None:
    on = next(OFFLOAD.glob("*tp4_users16_offloadon*.json"))
    off = next(OFFLOAD.glob("*tp8_users16_offloadoff*.json"))
    assert opts_of(json_of(on), on.name, [*OPTS, "kvoffload"]) == ("fp4", "kvoffload")
    assert opts_of(json_of(off), off.name, [*OPTS, "kvoffload"]) == ("fp4",)
    with pytest.raises(ReplayError) as e:
        opts_of(json_of(on), on.name, OPTS)
    assert str(e.value) == (f"{on.name}: offload_mode 'on' needs optimization 'kvoffload' in the matrices "
                            "(--infer-matrices)")
    assert variant_of(json_of(on)) == "dsr1-agentic-tp4-ep4" and variant_of(json_of(off)) == "dsr1-agentic-tp8-ep8"
    kimi = sorted(SINGLE.glob("agg_kimik2.5_*.json"))
    assert [variant_of(json_of(f)) for f in kimi] == ["kimik2.5-1k1k-tp8-ep1"] + ["kimik2.5-8k1k-tp8-ep1"] * 2
    assert {opts_of(json_of(f), f.name, OPTS) for f in kimi} == {("mtp",)}  # int4 is the model's reference
    wide = {"precision": "fp8", "spec_decoding": "mtp", "disagg": True, "is_multinode": True,
            "dp_attention": "true", "ep": 16, "offload_mode": "off"}
    assert opts_of(wide, "x.json", OPTS) == ("disagg", "wideep", "mtp")
    assert opts_of(wide | {"dp_attention": "false"}, "x.json", OPTS) == ("disagg", "mtp")
    with pytest.raises(ReplayError, match=r"x\.json: spec_decoding 'eagle' maps to no optimization"):
        opts_of(wide | {"spec_decoding": "eagle"}, "x.json", OPTS)
    with pytest.raises(ReplayError, match=r"x\.json: disagg True needs optimization 'disagg'"):
        opts_of(wide, "x.json", ["mtp"])


def test_stack_variant_in_id_and_parts() -> None:
    s = Stack("b200", "vllm", ("fp4", "kvoffload"), "dsr1-agentic-tp4-ep4")
    assert s.id == "b200-vllm-fp4+kvoffload@dsr1-agentic-tp4-ep4"
    assert [p.id for p in s.parts()] == ["b200-vllm-base@dsr1-agentic-tp4-ep4", "b200-vllm-fp4@dsr1-agentic-tp4-ep4",
                                         "b200-vllm-kvoffload@dsr1-agentic-tp4-ep4"]
    assert Stack("b200", "vllm", ()).id == "b200-vllm-base"


def test_classify_groups_by_stack_and_variant(tmp_path: Path) -> None:
    matrix = Matrix(kv_matrices(tmp_path / "m"))
    res = _copy(tmp_path / "res", OFFLOAD, SINGLE)
    # The raw failed-run file of single-node/ has no manifest: a one-line error naming its folder.
    with pytest.raises(ReplayError, match=r"single-node: raw benchmark results .* add infer-results.yaml to it"):
        classify(res, matrix, "b200", ["vllm"])
    (res / "single-node" / "failed-run_minimaxm2.5_8k1k_conc64.json").unlink()
    groups, skipped = classify(res, matrix, "b200", ["vllm"])  # mi355x files are left out
    assert skipped == []
    sizes = {s.id: len(recs) for s, recs in groups.items()}
    tp = {n: [json_of(f)["tp"] for f in OFFLOAD.glob(f"*offload{n}*.json")] for n in ("on", "off")}
    assert sizes == {KV.format(4, 4): tp["on"].count(4), KV.format(8, 8): tp["on"].count(8),
                     "b200-vllm-fp4@dsr1-agentic-tp4-ep4": tp["off"].count(4),
                     "b200-vllm-fp4@dsr1-agentic-tp8-ep8": tp["off"].count(8)}
    assert sizes[KV.format(8, 8)] == 9 and sizes["b200-vllm-fp4@dsr1-agentic-tp8-ep8"] == 11
    kimi, _ = classify(res / "single-node", matrix, "mi355x", ["vllm"])
    assert {s.id: len(r) for s, r in kimi.items()} == {"mi355x-vllm-mtp@kimik2.5-1k1k-tp8-ep1": 1,
                                                       "mi355x-vllm-mtp@kimik2.5-8k1k-tp8-ep1": 2}
    with pytest.raises(ReplayError, match=r"no results for b200 with vllm; found: mi355x/vllm \(3 results\)"):
        classify(res / "single-node", matrix, "b200", ["vllm"])


def test_same_concurrency_files_are_repeats_and_gpu_counts_come_from_the_manifest(tmp_path: Path) -> None:
    src = DATA / "disagg-16gpu-gpt-oss-120b"
    res = tmp_path / "res" / "sweep"
    res.mkdir(parents=True)
    for c in (4, 8):
        shutil.copy(src / f"concurrency_{c}.json", res / f"concurrency_{c}.json")
        shutil.copy(src / f"concurrency_{c * 2}.json", res / f"concurrency_{c}_again.json")
        again = json_of(res / f"concurrency_{c}_again.json") | {"max_concurrency": c}
        (res / f"concurrency_{c}_again.json").write_text(json.dumps(again))
    (res / "infer-results.yaml").write_text("- {files: 'concurrency_*.json', stack: disagg+mtp, gpus: 16, "
                                            "decode_gpus: 8, variant: oss}\n")
    matrix = Matrix(default_root())
    [(stack, recs)] = classify(tmp_path / "res", matrix, "h200", ["vllm"])[0].items()
    assert stack == Stack("h200", "vllm", ("disagg", "mtp"), "oss")
    m = measurement(stack, recs, matrix)
    assert (m.status, m.gpus, m.decode_gpus, m.workload.repeats) == ("ok", 16, 8, 2)
    assert [(lv.concurrency, lv.repeat) for lv in m.levels] == [(4, 0), (4, 1), (8, 0), (8, 1)]
    again = json_of(src / "concurrency_8.json")
    assert m.levels[1].per_gpu_throughput == again["total_token_throughput"] / 16
    # 1k/1k makes total = 2 x output, so total/16 == output/8: these two tell the GPU counts apart.
    assert m.levels[1].per_gpu_output_throughput == again["output_throughput"] / 16
    assert m.levels[1].per_decode_gpu_output_throughput == again["output_throughput"] / 8
    assert m.workload.input_len == 1024 and m.workload.concurrency == [4, 8]


def test_plain_store_is_detected(tmp_path: Path) -> None:
    wl = Workload(input_len=8, output_len=8, concurrency=[1])
    Store(tmp_path / "store").save(Measurement(key="abc123", stack="cpu-vllm-base", engine="vllm",
                                               engine_version="x", gpu="cpu", model="m", gpus=1, decode_gpus=1,
                                               workload=wl, argv={}))
    assert is_store(tmp_path / "store")
    assert not is_store(OFFLOAD) and not is_store(DATA)


# ---- end to end: pytest --gpu KIND --suite composability --results DIR ------------------------------

def _frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(interactivity, throughput) points no other point matches or beats on both axes."""
    def beaten(p: tuple[float, float]) -> bool:
        return any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)

    return sorted(p for p in points if not beaten(p))


def _at(frontier: list[tuple[float, float]], x: float) -> float | None:
    xs, ys = np.array([p[0] for p in frontier]), np.array([p[1] for p in frontier])
    if not xs[0] <= x <= xs[-1]:
        return None  # no extrapolation
    return float(ys[0]) if len(xs) == 1 else float(PchipInterpolator(xs, ys)(x))


def _saturated(files: list[dict[str, Any]]) -> bool:
    """The top concurrency buys under 10% more throughput than the best lower one (see Sweeps)."""
    by_users = {d["users"]: d["tput_per_gpu"] for d in files}
    top = max(by_users)
    return bool(by_users[top] < 1.1 * max(v for u, v in by_users.items() if u != top))


def _expected_ratios(tp: int) -> dict[str, float]:
    """offload on vs off at matched interactivity, from the files' tput_per_gpu and 1 / median_itl.
    Grid: every frontier point, moved into the stack's span (a saturated sweep's span reaches down to 0:
    its best point serves lower interactivity), kept where the part covers it, 0.5% apart."""
    curves, saturated = {}, {}
    for mode in ("on", "off"):
        files = [d for d in map(json_of, OFFLOAD.glob(f"*_tp{tp}_*offload{mode}*.json"))
                 if d["num_requests_successful"] == d["num_requests_total"]]  # failed requests: in no curve
        curves[mode] = _frontier([(1 / d["median_itl"], d["tput_per_gpu"]) for d in files])
        saturated[mode] = _saturated(files)

    def value(mode: str, x: float) -> float | None:
        front = curves[mode]
        if saturated[mode] and x < front[0][0]:
            return float(front[0][1])  # the highest-throughput point
        return _at(front, x)

    lo = 0.0 if saturated["on"] else curves["on"][0][0]
    hi = curves["on"][-1][0]
    grid: list[float] = []
    for x in sorted({min(max(p[0], lo), hi) for c in curves.values() for p in c}):
        if value("off", x) is not None and (not grid or x > grid[-1] * 1.005):
            grid.append(x)
    out = {}
    for x in grid:
        on, off = value("on", x), value("off", x)
        assert on is not None and off is not None
        out[f"{x:.2f}"] = on / off
    return out


def test_kv_offload_replayed_against_its_offload_off_part(pytester: pytest.Pytester) -> None:
    matrices = kv_matrices(pytester.path / "m")
    result = _run(pytester, "b200", _copy(pytester.path / "res", OFFLOAD), "--infer-matrices", str(matrices))
    # Only the stacks the results hold: two variants, offload on and off (the fp4 part has no part here).
    # Every sweep of these agentic runs lost requests at some level: no stack passes on them.
    result.assert_outcomes(failed=4)
    rows = _rows(pytester, "b200")
    assert set(rows) == {KV.format(4, 4), KV.format(8, 8), "b200-vllm-fp4@dsr1-agentic-tp4-ep4",
                         "b200-vllm-fp4@dsr1-agentic-tp8-ep8"}
    for tp in (4, 8):
        row, expected = rows[KV.format(tp, tp)], _expected_ratios(tp)
        assert row["best_part"] == "fp4" and len(expected) >= 4
        assert row["ratios"].keys() == expected.keys()
        for x, ratio in expected.items():
            assert row["ratios"][x] == pytest.approx(ratio, abs=6e-5), x
        assert row["worst_ratio"] == pytest.approx(min(expected.values()), abs=6e-5)
        files = {json_of(f)["users"]: json_of(f) for f in OFFLOAD.glob(f"*_tp{tp}_*offloadon*.json")}
        assert [lv["concurrency"] for lv in row["levels"]] == sorted(files)  # every level, counted or not
        for lv in row["levels"]:
            d = files[lv["concurrency"]]
            assert lv["per_gpu_throughput"] == pytest.approx(d["tput_per_gpu"], abs=0.051)
            assert (lv["completed"], lv["num_prompts"]) == (d["num_requests_successful"], d["num_requests_total"])
            assert bool(lv.get("problems")) == (d["num_requests_successful"] < d["num_requests_total"])
    out = result.stdout.str()
    # The agentic runs whose requests partly failed: named in the outcome and on the rows (the part's too).
    short = "agg_dsr1_tp4_users128_offloadoff_fp4_vllm_tp4-ep4-dpafalse_disagg-false_spec-none_conc128_b200-nb_1.json"
    line = f"concurrency 128: 119 failed and 152 completed of 271 requests ({short})"
    assert line in rows["b200-vllm-fp4@dsr1-agentic-tp4-ep4"]["failed_levels"]
    assert any(line in item for item in rows[KV.format(4, 4)]["failed_levels"])
    assert "concurrency 128: 134 failed and 150 completed of 284 requests" in out
    md = (pytester.path / "r" / "b200" / "composability.md").read_text()
    assert "Levels that do not count" in md and line in md
    stored = sorted(p.name.rsplit("-", 1)[0] for p in (pytester.path / "r" / "b200" / "replayed").glob("*.json"))
    assert stored == sorted(rows)


def test_kv_offload_without_the_optimization_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "b200", _copy(pytester.path / "res", OFFLOAD))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in result.errlines if ln.strip()]
    assert len(errors) == 1, errors
    assert "offloadon" in errors[0] and errors[0].endswith(
        ".json: offload_mode 'on' needs optimization 'kvoffload' in the matrices (--infer-matrices)")


DISAGG_MANIFEST = ("# 8 prefill + 8 decode GPUs (tests/data/inferencex/PROVENANCE.md)\n"
                   "- {files: 'concurrency_*.json', stack: disagg, gpus: 16, decode_gpus: 8, variant: NAME}\n")


def test_disagg_raw_files_normalised_per_gpu_and_per_decode_gpu(pytester: pytest.Pytester) -> None:
    folders = [DATA / "disagg-16gpu-gpt-oss-120b", DATA / "disagg-16gpu-minimax-m2.5"]
    result = _run(pytester, "b200", _copy(pytester.path / "res", *folders, manifest=DISAGG_MANIFEST))
    result.assert_outcomes(skipped=2)  # base is not in the results: nothing to compare with
    result.stdout.fnmatch_lines(["*inconclusive: no part could be measured*"])
    rows = _rows(pytester, "b200")
    assert set(rows) == {f"b200-vllm-disagg@{f.name}" for f in folders}
    for folder in folders:
        row = rows[f"b200-vllm-disagg@{folder.name}"]
        assert (row["gpus"], row["decode_gpus"]) == (16, 8) and "warnings" not in row
        raw = {d["max_concurrency"]: d for d in map(json_of, folder.glob("concurrency_*.json"))}
        assert [lv["concurrency"] for lv in row["levels"]] == [4, 8, 16, 32, 64, 128, 256, 512]
        for lv in row["levels"]:
            d = raw[lv["concurrency"]]
            assert lv["per_gpu_throughput"] == pytest.approx(d["total_token_throughput"] / 16, abs=0.051)
            assert lv["per_decode_gpu_output_throughput"] == pytest.approx(d["output_throughput"] / 8, abs=0.051)
            assert lv["interactivity"] == pytest.approx(1000 / d["median_tpot_ms"], abs=0.0051)
    top = rows["b200-vllm-disagg@disagg-16gpu-gpt-oss-120b"]["levels"][-1]
    assert (top["per_gpu_throughput"], top["per_decode_gpu_output_throughput"]) == (2816.8, 2816.8)


FAILED_MANIFEST = "- {files: 'failed-run_*.json', stack: base, gpus: 8, variant: minimaxm2.5-8k1k}\n"


def test_failed_run_fails_its_stack_with_the_reason(pytester: pytest.Pytester) -> None:
    """A run where every request failed reads as a level with nothing in it: its stack fails saying so
    (not "unknown result format", not an error that aborts the replay of the others)."""
    res = _copy(pytester.path / "res", SINGLE, manifest=FAILED_MANIFEST)
    result = _run(pytester, "mi355x", res)
    result.assert_outcomes(failed=1, skipped=2)
    out = result.stdout.str()
    assert ("mi355x-vllm-base@minimaxm2.5-8k1k composability: base: level(s) that do "
            "not count: concurrency 64: every request failed (640 failed, 0 completed) "
            "(failed-run_minimaxm2.5_8k1k_conc64.json); no level counts, nothing to compare") in out
    stored = Measurement.model_validate_json(next(
        (pytester.path / "r" / "mi355x" / "replayed").glob("mi355x-vllm-base@*.json")).read_text())
    assert stored.status == "ok" and [(lv.completed, lv.failed) for lv in stored.levels] == [(0, 640)]
    rows = _rows(pytester, "mi355x")
    kimi = rows["mi355x-vllm-mtp@kimik2.5-8k1k-tp8-ep1"]
    assert [lv["concurrency"] for lv in kimi["levels"]] == [32, 64]
    assert all("request counts not recorded, failed requests cannot be detected" in w for w in kimi["warnings"])


def test_raw_files_without_manifest_are_a_usage_error(pytester: pytest.Pytester) -> None:
    res = _copy(pytester.path / "res", DATA / "disagg-16gpu-gpt-oss-120b")
    result = _run(pytester, "b200", res)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in result.errlines if ln.strip()]
    assert len(errors) == 1, errors
    assert f"{res / 'disagg-16gpu-gpt-oss-120b'}: raw benchmark results" in errors[0]
    assert "add infer-results.yaml to it, e.g. `- {files: '*.json', stack: fp4+mtp, gpus: 8}`" in errors[0]
    assert "Traceback" not in result.stderr.str()


def _level(conc: int, interactivity: float, per_gpu: float) -> Level:
    return Level(concurrency=conc, num_prompts=10, completed=10, failed=0, duration_s=1.0,
                 output_throughput=per_gpu * 4, total_throughput=per_gpu * 8, per_gpu_throughput=per_gpu,
                 per_gpu_output_throughput=per_gpu / 2, per_decode_gpu_output_throughput=per_gpu / 2,
                 interactivity=interactivity, median_ttft_ms=100.0, median_tpot_ms=1000 / interactivity,
                 median_e2el_ms=1000.0, p99_ttft_ms=200.0, p99_tpot_ms=2000 / interactivity)


def test_a_plain_store_is_replayed_as_before(pytester: pytest.Pytester) -> None:
    store = Store(pytester.path / "store")
    wl = Workload(input_len=1024, output_len=1024, concurrency=[4, 16])
    for label, tput in (("base", (1000.0, 2000.0)), ("mtp", (900.0, 1800.0))):
        store.save(Measurement(key="abc123", stack=f"b200-vllm-{label}", engine="vllm", engine_version="x",
                               gpu="b200", model="m", gpus=8, decode_gpus=8, workload=wl, argv={}, status="ok",
                               levels=[_level(4, 100.0, tput[0]), _level(16, 50.0, tput[1])]))
    result = _run(pytester, "b200", store.root, "--stack", "not fp4 and not disagg and not wideep", "--engine", "vllm")
    result.assert_outcomes(passed=1, failed=1)  # all stacks of the space, as before: no variants
    rows = _rows(pytester, "b200")
    assert set(rows) == {"b200-vllm-base", "b200-vllm-mtp"}
    assert rows["b200-vllm-mtp"]["ratios"] == {"50.00": 0.9, "100.00": 0.9}
    assert not (pytester.path / "r" / "b200" / "replayed").exists()


def test_two_engines_side_by_side_in_the_matrix_and_in_one_plot(pytester: pytest.Pytester) -> None:
    """The tp8 kv-offload files, and the same files relabelled as SGLang's here (framework and file name
    changed: a second engine's data shaped like the first's, not a claim about SGLang): one stack's rows are
    adjacent in the matrix, and one plot draws both engines' curves per stack."""
    res = two_engines(pytester.path / "res")
    result = _run(pytester, "b200", res, "--infer-matrices", str(kv_matrices(pytester.path / "m")))
    assert result.ret == 1, result.stdout.str()  # the offload runs lost requests: failures, as for vLLM alone
    md = (pytester.path / "r" / "b200" / "composability.md").read_text()
    table = md.split("### Details")[0]
    ids = [ln.split("|")[1].strip(" `") for ln in table.splitlines() if ln.startswith("| `")]
    assert ids == ["b200-sglang-fp4@dsr1-agentic-tp8-ep8", "b200-vllm-fp4@dsr1-agentic-tp8-ep8",
                   "b200-sglang-fp4+kvoffload@dsr1-agentic-tp8-ep8", "b200-vllm-fp4+kvoffload@dsr1-agentic-tp8-ep8"]
    plot = pytester.path / "r" / "b200" / "composability-engines.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(composability-engines.png)" in md
    assert "4 measurement(s); engines `sglang 0.19.1`, `vllm 0.19.1`;" in md  # the files' image version, relabelled
