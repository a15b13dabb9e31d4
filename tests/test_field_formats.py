"""Reading what the field writes today, and wrote before (issue 13, part 3; the replay side of part 2):
every InferenceX aggregate schema, raw vLLM and SGLang results in old and new spellings, request-rate runs,
non-result files, broken files, dead runs, and manifests that contradict what a file says about itself.

Inputs are the real files of tests/data/inferencex (PROVENANCE.md), copied to tmp_path and, where a test
needs another spelling, rewritten field by field the way the named producer writes it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from replaydata import json_of, kv_matrices

from pytest_infer.matrix import Matrix, default_root
from pytest_infer.replay.ingest import SkipResult, ingest_dir, ingest_file, name_fields
from pytest_infer.replay.replay import ReplayError, classify, gpu_kind, measurement, opts_of, variant_of
from pytest_infer.store.records import ResultError

DATA = Path(__file__).resolve().parent / "data" / "inferencex"
OFFLOAD = DATA / "b200-dsr1-fp4-vllm-kv-offload"  # kv-cache-tester: users, offload_mode on|off
SINGLE = DATA / "single-node"  # fixed-seq-len aggregates (conc, median_*) and a dead raw vLLM run
AGENTX = DATA / "agentx-v1-mi355x-kimik2.7-tp8"  # AgentX v1: nested request_metrics, kv_offloading none|dram
GPT_OSS = DATA / "disagg-16gpu-gpt-oss-120b"  # raw vLLM bench results, 8 prefill + 8 decode GPUs
NOT_RESULTS = DATA / "not-results"
FAILED = SINGLE / "failed-run_minimaxm2.5_8k1k_conc64.json"
KIMI_MTP = "mi355x-vllm-mtp@kimik2.5-{}-tp8-ep1"
K27 = "mi355x-vllm-{}@kimik2.7-agentic-tp8-ep1"



def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _kv_matrix(dst: Path) -> Matrix:
    return Matrix(kv_matrices(dst))


def _sizes(groups: dict[Any, list[Any]]) -> dict[str, int]:
    return {s.id: len(recs) for s, recs in groups.items()}


def _aiperf_era(d: dict[str, Any], offloading: str | None = None) -> dict[str, Any]:
    """A kv-cache-tester aggregate as InferenceX's aiperf-era aggregation (utils/process_agentic_result.py,
    e92a9bf97 .. 1b234994f) named things: `conc`, `offloading: none|lmcache|...`, spec_decoding and disagg,
    mean/p75/p90/p95 statistics only (no median, no p99), tpot written equal to itl, e2el for ttlt, and
    num_requests_total == num_requests_successful (error records were dropped before counting)."""
    out = {k: v for k, v in d.items() if not re.match(r"^(median|p99|p99\.9)_", k)}
    out["conc"] = out.pop("users")
    mode = out.pop("offload_mode")
    out["offloading"] = offloading or ("lmcache" if mode == "on" else "none")
    out |= {"spec_decoding": "none", "disagg": False, "num_requests_total": out["num_requests_successful"]}
    for stat in ("mean", "p90"):
        out[f"{stat}_tpot"] = out[f"{stat}_itl"]
        out[f"{stat}_e2el"] = out.pop(f"{stat}_ttlt")
    return out


def _as_sglang(d: dict[str, Any], *, new: bool) -> dict[str, Any]:
    """A measured raw vLLM level (tests/data) spelled the way SGLang's bench_serving saves one: keys of
    sgl-project/sglang python/sglang/bench_serving.py benchmark() (old, 0033168f) and
    python/sglang/benchmark/metrics.py save_results (new, 6e48df33, adds total_throughput and max_itl_ms)."""
    out = {
        "backend": "sglang", "dataset_name": "random", "request_rate": float("inf"),
        "max_concurrency": d["max_concurrency"], "sharegpt_output_len": None, "random_input_len": 1024,
        "random_output_len": 1024, "random_range_ratio": 1.0, "duration": d["duration"],
        "completed": d["completed"], "total_input_tokens": d["total_input_tokens"],
        "total_output_tokens": d["total_output_tokens"],
        "total_output_tokens_retokenized": d["total_output_tokens"],
        "request_throughput": d["request_throughput"],
        "input_throughput": d["total_token_throughput"] - d["output_throughput"],
        "output_throughput": d["output_throughput"], "mean_e2e_latency_ms": d["mean_e2el_ms"],
        "median_e2e_latency_ms": d["median_e2el_ms"], "std_e2e_latency_ms": d["std_e2el_ms"],
        "p99_e2e_latency_ms": d["p99_e2el_ms"], "mean_ttft_ms": d["mean_ttft_ms"],
        "median_ttft_ms": d["median_ttft_ms"], "std_ttft_ms": d["std_ttft_ms"], "p99_ttft_ms": d["p99_ttft_ms"],
        "mean_tpot_ms": d["mean_tpot_ms"], "median_tpot_ms": d["median_tpot_ms"],
        "std_tpot_ms": d["std_tpot_ms"], "p99_tpot_ms": d["p99_tpot_ms"], "mean_itl_ms": d["mean_itl_ms"],
        "median_itl_ms": d["median_itl_ms"], "std_itl_ms": d["std_itl_ms"], "p99_itl_ms": d["p99_itl_ms"],
        "concurrency": d["max_concurrency"] * 0.97, "accept_length": None,
    }  # fmt: skip
    if new:
        out |= {"total_throughput": d["total_token_throughput"], "max_itl_ms": d["p99.9_itl_ms"]}
    return out


def _vllm_032(d: dict[str, Any]) -> dict[str, Any]:
    """An older client's raw result (IX utils/bench_serving/benchmark_serving.py: no `failed`, the key
    "request_goodput:") as vllm-project/vllm vllm/benchmarks/serve.py (009e6d4a) saves it today."""
    out = {k: v for k, v in d.items() if k not in ("request_goodput:", "best_of")}
    return {"endpoint_type": "openai", "label": None} | out | {
        "failed": d["num_prompts"] - d["completed"], "request_goodput": None,
        "max_output_tokens_per_s": d["output_throughput"] * 1.2, "max_concurrent_requests": d["max_concurrency"],
        "rtfx": 0.0}


# ---- KV-cache offload in every spelling ---------------------------------------------------------------

def test_offload_on_and_off_are_two_stacks_in_every_spelling(tmp_path: Path) -> None:
    matrix = _kv_matrix(tmp_path / "m")
    # AgentX v1 (today): kv_offloading dram (kv_offload_backend lmcache) vs none
    groups, skipped = classify(shutil.copytree(AGENTX, tmp_path / "agentx" / AGENTX.name).parent, matrix,
                               "mi355x", ["vllm"])
    dram = [f for f in AGENTX.glob("*.json") if json_of(f)["kv_offloading"] == "dram"]
    assert len(dram) == 3 and all(json_of(f)["kv_offload_backend"]["name"] == "lmcache" for f in dram)
    assert _sizes(groups) == {K27.format("fp4+kvoffload"): 3, K27.format("fp4"): 2} and skipped == []
    # aiperf era (v0.2-v0.3): offloading lmcache vs none
    era = tmp_path / "era" / "sweep"
    for f in OFFLOAD.glob("*_tp4_*.json"):
        _write(era / f.name, _aiperf_era(json_of(f)))
    groups, skipped = classify(era.parent, matrix, "b200", ["vllm"])
    tp4 = [json_of(f)["offload_mode"] for f in OFFLOAD.glob("*_tp4_*.json")]
    assert _sizes(groups) == {"b200-vllm-fp4+kvoffload@dsr1-agentic-tp4-ep4": tp4.count("on"),
                              "b200-vllm-fp4@dsr1-agentic-tp4-ep4": tp4.count("off")} and skipped == []
    # the other v0.3 values are on too; a value that maps to nothing is refused, naming field and value
    one = _aiperf_era(json_of(next(OFFLOAD.glob("*_tp4_users16_offloadoff*.json"))))
    for on in ("hicache", "lmcache-mp", "cpu"):
        assert opts_of(one | {"offloading": on}, "x.json", ["fp4", "kvoffload"]) == ("fp4", "kvoffload")
    assert opts_of(one, "x.json", ["fp4", "kvoffload"]) == ("fp4",)
    with pytest.raises(ReplayError, match=r"^x\.json: offloading 'zram' maps to no optimization \(known: .*dram"):
        opts_of(one | {"offloading": "zram"}, "x.json", ["fp4", "kvoffload"])
    with pytest.raises(ReplayError, match=r"x\.json: kv_offloading 'dram' needs optimization 'kvoffload'"):
        opts_of(json_of(dram[0]), "x.json", ["fp4"])


# ---- InferenceX aggregates: every schema -----------------------------------------------------------------

def test_aiperf_era_conc_and_mean_percentile_latencies_read_with_the_stand_ins_said(tmp_path: Path) -> None:
    src = next(OFFLOAD.glob("*_tp8_users16_offloadoff*.json"))
    d = _aiperf_era(json_of(src))
    r = ingest_file(_write(tmp_path / src.name, d))
    assert (r.format, r.producer, r.concurrency, r.gpus, r.offload_mode) == ("inferencex", "agentic-flat", 16, 8, "off")
    assert r.level.interactivity == pytest.approx(1 / d["mean_tpot"])
    assert r.level.median_tpot_ms == pytest.approx(d["mean_itl"] * 1000)
    assert r.level.median_ttft_ms == pytest.approx(d["mean_ttft"] * 1000)
    assert r.level.median_e2el_ms == pytest.approx(d["mean_e2el"] * 1000)
    assert r.level.p99_ttft_ms == pytest.approx(d["p90_ttft"] * 1000)
    assert r.level.per_gpu_throughput == d["tput_per_gpu"]
    [said] = [w for w in r.warnings if "stand-ins" in w]
    assert said.startswith(f"{src.name}: statistics the file lacks, stand-ins: mean TPOT for median TPOT")
    assert "mean TTFT for median TTFT" in said and "p90 TTFT for p99 TTFT" in said
    assert f"{src.name}: failed requests not recorded (this aggregate counted successes only)" in r.warnings
    # median_* present (v0.1 and kv-cache-tester): no stand-in, no warning about it
    assert not [w for w in ingest_file(src).warnings if "stand-ins" in w]


def test_agentx_nested_request_metrics(tmp_path: Path) -> None:
    kinds = list(Matrix(default_root()).gpus)
    for f in sorted(AGENTX.glob("*.json")):
        raw, r = json_of(f), ingest_file(f)
        rm, acct = raw["request_metrics"], raw["request_accounting"]
        assert (r.format, r.producer, r.hw, r.concurrency) == ("inferencex", "agentx-v1", raw["hw"], raw["conc"])
        assert gpu_kind(raw["hw"], kinds) == "mi355x"  # "cluster:mi355x-amds"
        assert r.gpus == r.decode_gpus == raw["tp"] * raw["pp"] * raw["pcp_size"] == 8
        lv = r.level
        assert lv.per_gpu_throughput == rm["throughput"]["per_gpu"]["total_tput_tps"]
        assert lv.total_throughput == rm["throughput"]["total"]["tokens_per_second"]
        assert lv.output_throughput == rm["throughput"]["output"]["tokens_per_second"]
        assert lv.duration_s == rm["throughput"]["duration_seconds"]
        assert lv.interactivity == pytest.approx(1 / rm["latency"]["itl"]["p50"])  # p50 is the median
        assert lv.median_ttft_ms == pytest.approx(rm["latency"]["ttft"]["p50"] * 1000)
        assert lv.median_e2el_ms == pytest.approx(rm["latency"]["e2el"]["p50"] * 1000)
        assert lv.p99_ttft_ms == pytest.approx(rm["latency"]["ttft"]["p95"] * 1000)  # no p99: p95, said
        assert any("p95 TTFT for p99 TTFT" in w for w in r.warnings)
        # warmup rows are in records_total and not requests of the level; errors among the rest are failed
        errors = acct["records_dropped_total"] - acct["records_warmup_dropped"]
        ok = raw["num_requests_successful"]
        assert (lv.completed, lv.failed, lv.num_prompts) == (ok, errors, ok + errors)
        assert lv.num_prompts < raw["num_requests_total"]
        assert lv.output_tokens == round(rm["tokens"]["output_actual"]["mean"] * ok)
        assert lv.expected_output_tokens is None  # traces replay without ignore_eos
        assert lv.failure_threshold == 0.10  # IX benchmark-tmpl.yml AIPERF_FAILED_REQUEST_THRESHOLD
        assert r.offload_mode == ("on" if raw["kv_offloading"] == "dram" else "off")
        assert r.offload_backend == (raw["kv_offload_backend"] or {}).get("name")
        assert variant_of(raw) == "kimik2.7-agentic-tp8-ep1"
    c48 = ingest_file(next(AGENTX.glob("*_conc48_*.json"))).level
    assert c48.failed == 1 and c48.problems() and c48.tolerated  # 1 of 907 failed: within 10%
    # Full-response ITL takes precedence when the file has it (as InferenceX-app's flattening does)
    src = next(AGENTX.glob("*_conc8_*.json"))
    d = json_of(src)
    d["request_metrics"]["latency"]["full_response_itl"] = {"mean": 0.06, "p50": 0.05, "p75": 0.07, "p95": 0.09}
    assert ingest_file(_write(tmp_path / src.name, d)).level.interactivity == pytest.approx(20.0)


def test_fixed_seq_len_counts_and_gpu_count_with_pipeline_parallel(tmp_path: Path) -> None:
    f = next(SINGLE.glob("agg_kimik2.5_8k1k_*conc32*.json"))
    r = ingest_file(f)
    # counts are not in the aggregate: the pipeline's conc x 10 prompts, a warning, and the level counts
    assert (r.producer, r.level.completed, r.level.num_prompts, r.level.failed) == ("fixed-seq-len", 320, 320, 0)
    assert r.level.ok and any("request counts not recorded" in w for w in r.warnings)
    # IX process_result.py: GPUs = tp * pp * pcp_size (dcp adds none); the file name says the same
    d = json_of(f) | {"pp": 2, "dcp_size": 2, "pcp_size": 1}
    name = f.name.replace("_tp8-ep1-", "_tp8-pp2-dcp2-pcp1-ep1-")
    r = ingest_file(_write(tmp_path / name, d))
    assert (r.gpus, r.pp, r.pcp) == (16, 2, 1)
    assert r.level.total_throughput == pytest.approx(d["tput_per_gpu"] * 16)
    assert variant_of(d) == "kimik2.5-8k1k-tp8-ep1-pp2"
    assert {nf.field: nf.value for nf in name_fields(name)} == {
        "precision": "int4", "framework": "vllm", "tp": 8, "pp": 2, "pcp_size": 1, "ep": 1, "dp_attention": False,
        "disagg": False, "spec_decoding": "mtp", "conc": 32}


def test_collected_agg_bmk_json_list_one_record_per_element(tmp_path: Path) -> None:
    # IX utils/collect_results.py: every JSON under results/ into one list, written as agg_<prefix>.json
    files = sorted(SINGLE.glob("agg_*.json")) + sorted(AGENTX.glob("*.json"))
    bmk = _write(tmp_path / "res" / "agg_bmk.json", [json_of(f) for f in files])
    got = ingest_dir(bmk.parent)
    assert sorted(r.level.source for r in got) == sorted(f"{bmk}[{i}]" for i in range(len(files)))
    by_source = {r.level.source: r for r in got}
    for i, f in enumerate(files):
        assert by_source[f"{bmk}[{i}]"].level.model_copy(update={"source": ""}) == \
            ingest_file(f).level.model_copy(update={"source": ""})
    with pytest.raises(ResultError, match=rf"holds {len(files)} results \(a JSON list\)"):
        ingest_file(bmk)
    groups, skipped = classify(bmk.parent, _kv_matrix(tmp_path / "m"), "mi355x", ["vllm"])
    assert _sizes(groups) == {KIMI_MTP.format("1k1k"): 1, KIMI_MTP.format("8k1k"): 2,
                              K27.format("fp4+kvoffload"): 3, K27.format("fp4"): 2} and skipped == []


# ---- raw vLLM and SGLang, old and new names --------------------------------------------------------------

def test_sglang_jsonl_old_and_new_names(tmp_path: Path) -> None:
    raw = {c: json_of(GPT_OSS / f"concurrency_{c}.json") for c in (4, 8, 16, 64)}
    oldest = {k: v for k, v in _as_sglang(raw[16], new=False).items() if "tpot" not in k}  # no *_tpot_ms
    lines = [_as_sglang(raw[4], new=False), _as_sglang(raw[8], new=True), oldest,
             _as_sglang(raw[64], new=True) | {"total_output_tokens": 64_000},  # ended early
             _as_sglang(raw[64], new=True) | {"max_concurrency": None, "request_rate": 8.0}]  # a rate run
    f = tmp_path / "sweep" / "sglang_0601_640_1024_1024.jsonl"
    f.parent.mkdir()
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))  # inf is written as Infinity, as SGLang does
    assert "Infinity" in f.read_text()
    with pytest.raises(SkipResult, match=r"jsonl:5: a request-rate run \(request_rate 8, max_concurrency null\)"):
        ingest_dir(f.parent, gpus=16, decode_gpus=8)
    f.write_text("".join(json.dumps(x) + "\n" for x in lines[:4]))
    got = {r.concurrency: r for r in ingest_dir(f.parent, gpus=16, decode_gpus=8)}
    assert sorted(got) == [4, 8, 16, 64] and all(r.format == "sglang-bench" for r in got.values())
    for c in (4, 8, 16):
        lv = got[c].level
        assert lv.per_gpu_throughput == pytest.approx(raw[c]["total_token_throughput"] / 16)
        assert lv.per_decode_gpu_output_throughput == pytest.approx(raw[c]["output_throughput"] / 8)
        assert lv.median_e2el_ms == raw[c]["median_e2el_ms"]
        # random, ratio 1: every request asks 1024 tokens; SGLang saves no request count
        assert lv.expected_output_tokens == raw[c]["completed"] * 1024 == lv.output_tokens
        assert lv.completed == lv.num_prompts and lv.ok
        assert any("request count not recorded" in w for w in got[c].warnings)
    assert got[4].level.interactivity == pytest.approx(1000 / raw[4]["median_tpot_ms"])
    assert got[16].level.interactivity == pytest.approx(1000 / raw[16]["median_itl_ms"])  # oldest: ITL
    assert any("median ITL stands in for median TPOT" in w for w in got[16].warnings)
    assert got[64].level.problems() == [
        f"concurrency 64: 64000 output tokens, expected 655360 for 640 requests with ignore_eos (requests ended "
        f"early) ({f.name}:4)"]


def test_vllm_032_failed_requests_and_an_appended_rate_run(tmp_path: Path) -> None:
    """vllm bench serve --append-result writes one JSON per line into the .json file (serve.py main_async):
    the capped level with 40 failed requests reads with its problem, the request-rate run is skipped."""
    d = json_of(GPT_OSS / "concurrency_64.json") | {"completed": 600}
    capped = _vllm_032(d)
    assert capped["failed"] == 40
    rated = _vllm_032(json_of(GPT_OSS / "concurrency_64.json")) | {"max_concurrency": None, "request_rate": 10.0}
    res = tmp_path / "res" / "oss"
    res.mkdir(parents=True)
    (res / "vllm-0.32.json").write_text(json.dumps(capped) + "\n" + json.dumps(rated))
    (res / "infer-results.yaml").write_text("- {files: '*.json', stack: disagg, gpus: 16, decode_gpus: 8}\n")
    matrix = Matrix(default_root())
    groups, skipped = classify(res.parent, matrix, "h200", ["vllm"])
    [(stack, recs)] = groups.items()
    assert stack.id == "h200-vllm-disagg" and [r.source for r in recs] == [f"{res / 'vllm-0.32.json'}:1"]
    assert skipped == [f"{res / 'vllm-0.32.json'}:2: a request-rate run (request_rate 10, max_concurrency null): "
                       "the suites compare concurrency sweeps; re-run with --max-concurrency"]
    [lv] = measurement(stack, recs, matrix).levels
    assert (lv.concurrency, lv.completed, lv.failed, lv.num_prompts) == (64, 600, 40, 640)
    assert lv.problems() == ["concurrency 64: 40 failed and 600 completed of 640 requests (vllm-0.32.json:1)"]


def test_request_rate_sweep_is_skipped_with_its_reason_not_collapsed(tmp_path: Path) -> None:
    base = json_of(GPT_OSS / "concurrency_64.json")
    res = tmp_path / "res" / "rates"
    for tag, rate in (("10", 10.0), ("30", 30.0), ("inf", "inf")):  # vllm writes inf as the string "inf"
        _write(res / f"vllm-{tag}qps.json", base | {"max_concurrency": None, "request_rate": rate})
    (res / "infer-results.yaml").write_text("- {files: '*.json', stack: disagg, gpus: 16, decode_gpus: 8}\n")
    matrix = Matrix(default_root())
    with pytest.raises(ReplayError) as e:
        classify(res.parent, matrix, "h200", ["vllm"])
    lines = str(e.value).splitlines()
    assert lines[0] == f"--results {res.parent}: no results for h200 with vllm; found: none; skipped 3:"
    assert lines[1:] == [f"{res / f'vllm-{r}qps.json'}: a request-rate run (request_rate {r}, max_concurrency null): "
                         "the suites compare concurrency sweeps; re-run with --max-concurrency"
                         for r in ("10", "30", "inf")]
    shutil.copy(GPT_OSS / "concurrency_64.json", res / "concurrency_64.json")
    groups, skipped = classify(res.parent, matrix, "h200", ["vllm"])
    [(stack, recs)] = groups.items()
    assert len(recs) == 1 and len(skipped) == 3  # never "concurrency 0, 3 repeats"
    assert [lv.concurrency for lv in measurement(stack, recs, matrix).levels] == [64]
    with pytest.raises(SkipResult, match=r"vllm-10qps\.json: a request-rate run \(request_rate 10,"):
        ingest_file(res / "vllm-10qps.json", gpus=16)


# ---- what is not a result, what cannot be read ---------------------------------------------------------

def test_non_result_json_beside_results_is_skipped_and_listed(tmp_path: Path) -> None:
    res = shutil.copytree(AGENTX, tmp_path / "res" / AGENTX.name).parent
    for f in (*NOT_RESULTS.glob("*.json"), DATA / "gsm8k-evals.json"):
        shutil.copy(f, res / f.name)
    _write(res / "empty.json", [])
    _write(res / "numbers.json", [1, 2])
    groups, skipped = classify(res, _kv_matrix(tmp_path / "m"), "mi355x", ["vllm"])
    assert _sizes(groups) == {K27.format("fp4+kvoffload"): 3, K27.format("fp4"): 2}
    unknown = "not a result: unknown format (none of 'tput_per_gpu', 'request_metrics', 'total_token_throughput', " \
              "'median_e2e_latency_ms')"
    assert sorted(skipped) == sorted([
        f"{res / 'empty.json'}: not a result file (an empty JSON list)",
        f"{res / 'numbers.json'}: not a result object (an element is int)",
        f"{res / 'gsm8k-evals.json'}: {unknown} (66 records)",  # eval rows
        f"{res / 'sweep.json'}: {unknown}",  # a benchmark config
        # latencies in seconds and input_throughput, but no SGLang result: not misread as one
        f"{res / 'glm5_fp8_vllm_tp8_isl1024_osl128_conc16.json'}: {unknown}",
    ])
    with pytest.raises(ResultError, match=r"gsm8k-evals\.json: not a result file \(none of its 66 records"):
        ingest_file(DATA / "gsm8k-evals.json")


def test_unreadable_files_are_one_usage_error_with_a_line_each(tmp_path: Path) -> None:
    res = shutil.copytree(AGENTX, tmp_path / "res" / "ok")
    bad = tmp_path / "res" / "bad"
    bad.mkdir()
    agentx = next(AGENTX.glob("*.json"))
    (bad / agentx.name).write_text(agentx.read_text()[:700])  # truncated
    (bad / "concurrency_4.json").write_text((GPT_OSS / "concurrency_4.json").read_text()[:300])
    (bad / "latin1.json").write_bytes(b'{"model": "caf\xe9"}')
    (bad / "sglang.jsonl").write_text(json.dumps(_as_sglang(json_of(GPT_OSS / "concurrency_4.json"), new=True))
                                      + "\n{broken\n")
    with pytest.raises(ReplayError) as e:
        classify(res.parent, _kv_matrix(tmp_path / "m"), "mi355x", ["vllm"])
    lines = str(e.value).splitlines()
    assert len(lines) == 4
    assert sorted(ln.split(":")[0] for ln in lines) == sorted(str(p) for p in bad.iterdir())
    assert sum("not valid JSON" in ln for ln in lines) == 3 and sum("cannot read" in ln for ln in lines) == 1


# ---- dead runs ---------------------------------------------------------------------------------------------

def test_dead_runs_read_as_every_request_failed(tmp_path: Path) -> None:
    # raw vLLM (real): completed 0 of 640
    lv = ingest_file(FAILED, gpus=8).level
    assert lv.problems() == [f"concurrency 64: every request failed (640 failed, 0 completed) ({FAILED.name})"]
    # AgentX v1 with no successful request: no throughput and no latency blocks at all (IX request_metrics.py
    # returns {} for them), 50 errors after the warmup
    src = next(AGENTX.glob("*_conc8_*.json"))
    d = json_of(src)
    acct = d["request_accounting"]
    warm = acct["records_warmup_dropped"]
    d |= {"num_requests_successful": 0, "request_accounting": acct | {
        "records_profiled": 0, "records_error_dropped": 50, "records_dropped_total": warm + 50,
        "records_total": warm + 50}}
    rm = d["request_metrics"]
    rm |= {"qps": {}, "throughput": {}, "latency": {k: {} for k in rm["latency"]},
           "tokens": {k: {} for k in rm["tokens"]}}
    r = ingest_file(_write(tmp_path / src.name, d))
    assert r.level.problems() == [f"concurrency 8: every request failed (50 failed, 0 completed) ({src.name})"]
    assert (r.level.per_gpu_throughput, r.level.interactivity, r.level.output_tokens) == (0.0, 0.0, 0)
    # aiperf era flat: counts and no throughput fields
    old = _aiperf_era(json_of(next(OFFLOAD.glob("*_tp8_users8_*.json"))))
    old = {k: v for k, v in old.items() if "tput" not in k and not k.startswith(("mean_", "p75_", "p90_", "p95_"))}
    old |= {"num_requests_total": 30, "num_requests_successful": 0}
    assert ingest_file(_write(tmp_path / "old.json", old)).level.problems()[0].startswith(
        "concurrency 8: every request failed (30 failed, 0 completed)")
    # SGLang (new writer): completed 0, e2e statistics NaN (mean of nothing)
    sgl = _as_sglang(json_of(GPT_OSS / "concurrency_4.json"), new=True) | {
        "completed": 0, "total_output_tokens": 0, "output_throughput": 0.0, "total_throughput": 0.0,
        "median_e2e_latency_ms": float("nan"), "mean_e2e_latency_ms": float("nan"), "median_tpot_ms": 0.0}
    lv = ingest_file(_write(tmp_path / "sgl.json", sgl), gpus=16, decode_gpus=8).level
    assert lv.problems()[0].startswith("concurrency 4: every request failed") and lv.median_e2el_ms == 0.0


# ---- the stack is what it claims ---------------------------------------------------------------------------

def _claim(tmp_path: Path, files: list[Path], manifest: str, rename: dict[str, str] | None = None) -> Path:
    res = tmp_path / "res" / "d"
    res.mkdir(parents=True)
    for f in files:
        shutil.copy(f, res / (rename or {}).get(f.name, f.name))
    (res / "infer-results.yaml").write_text(manifest)
    return res.parent


def test_a_manifest_that_contradicts_the_files_fails(tmp_path: Path) -> None:
    kv = _kv_matrix(tmp_path / "m")
    agentx = sorted(AGENTX.glob("*kvdram*.json"))
    with pytest.raises(ReplayError) as e:
        classify(_claim(tmp_path / "a", agentx, "- {files: '*.json', stack: fp4}\n"), kv, "mi355x", ["vllm"])
    assert str(e.value) == f"{agentx[0].name}: claims fp4 (manifest entry 0) but kv_offloading is 'dram'"
    kimi = sorted(SINGLE.glob("agg_kimik2.5_*.json"))
    manifest = "- {files: 'x*', stack: fp4}\n- {files: 'agg_*.json', stack: base, variant: k}\n"
    with pytest.raises(ReplayError, match=r"^agg_kimik2\.5_1k1k\S*: claims base \(manifest entry 1\) but "
                                          r"spec_decoding is 'mtp'$"):
        classify(_claim(tmp_path / "b", kimi, manifest), kv, "mi355x", ["vllm"])
    with pytest.raises(ReplayError, match=r"^agg_kimik2\.5_1k1k\S*: manifest entry 0 says gpus: 4 but the file "
                                          r"counts 8 GPUs \(8 decode\)$"):
        classify(_claim(tmp_path / "c", kimi, "- {files: '*.json', stack: mtp, gpus: 4}\n"), kv, "mi355x", ["vllm"])
    groups, _ = classify(_claim(tmp_path / "d", kimi, "- {files: '*.json', stack: mtp, variant: k}\n"), kv,
                         "mi355x", ["vllm"])
    assert _sizes(groups) == {"mi355x-vllm-mtp@k": 3}
    # no spec_decoding field in kv-cache-tester files: the InferenceX file name says spec-none
    off = next(OFFLOAD.glob("*_tp8_users16_offloadoff*.json"))
    with pytest.raises(ReplayError) as e:
        classify(_claim(tmp_path / "e", [off], "- {files: '*.json', stack: fp4+mtp}\n"), kv, "b200", ["vllm"])
    assert str(e.value) == f"{off.name}: claims fp4+mtp (manifest entry 0) but its name says 'spec-none'"


def test_a_raw_file_named_like_inferencex_is_held_to_its_name(tmp_path: Path) -> None:
    raw = GPT_OSS / "concurrency_4.json"
    name = "gptoss_1k1k_fp4_vllm_tp8-ep1-dpafalse_disagg-false_spec-mtp_conc4_b200-nb_0.json"
    matrix = Matrix(default_root())
    with pytest.raises(ReplayError) as e:
        classify(_claim(tmp_path / "a", [raw], "- {files: '*.json', stack: fp4, gpus: 8}\n", {raw.name: name}),
                 matrix, "b200", ["vllm"])
    assert str(e.value) == f"{name}: claims fp4 (manifest entry 0) but its name says 'spec-mtp'"
    with pytest.raises(ReplayError) as e:
        classify(_claim(tmp_path / "b", [raw], "- {files: '*.json', stack: fp4+mtp, gpus: 16}\n", {raw.name: name}),
                 matrix, "b200", ["vllm"])
    assert str(e.value) == f"{name}: manifest entry 0 says gpus: 16 but its name says 'tp8': 8 GPUs (8 decode)"
    groups, _ = classify(_claim(tmp_path / "c", [raw], "- {files: '*.json', stack: fp4+mtp, gpus: 8}\n",
                                {raw.name: name}), matrix, "b200", ["vllm"])
    assert _sizes(groups) == {"b200-vllm-fp4+mtp": 1}


def test_an_inferencex_file_whose_name_contradicts_its_fields_fails(tmp_path: Path) -> None:
    kimi = next(SINGLE.glob("agg_kimik2.5_1k1k_*.json"))
    wrong = kimi.name.replace("spec-mtp", "spec-none")
    res = tmp_path / "res" / "d"
    res.mkdir(parents=True)
    shutil.copy(kimi, res / wrong)
    with pytest.raises(ReplayError) as e:
        classify(res.parent, Matrix(default_root()), "mi355x", ["vllm"])
    assert str(e.value) == f"{wrong}: its name says 'spec-none' but spec_decoding is 'mtp'"
    on = next(OFFLOAD.glob("*_tp4_users16_offloadon*.json"))
    (res / wrong).unlink()
    shutil.copy(on, res / on.name.replace("offloadon", "offloadoff"))
    with pytest.raises(ReplayError, match=r"its name says 'offloadoff' but offload_mode is 'on'$"):
        classify(res.parent, _kv_matrix(tmp_path / "m"), "b200", ["vllm"])
