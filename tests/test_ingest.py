"""Ingesting results measured elsewhere (InferenceX fixtures, see tests/data/inferencex/PROVENANCE.md):
numbers checked against the raw fields of the files; dead runs read as levels where every request failed.
Other spellings and schemas of the field: tests/test_field_formats.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_infer.replay.ingest import SkipResult, ingest_dir, ingest_file
from pytest_infer.store.records import ResultError

DATA = Path(__file__).resolve().parent / "data" / "inferencex"
GPT_OSS = DATA / "disagg-16gpu-gpt-oss-120b"
OFFLOAD = DATA / "b200-dsr1-fp4-vllm-kv-offload"
FAILED = DATA / "single-node" / "failed-run_minimaxm2.5_8k1k_conc64.json"


def _raw(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_disagg_vllm_bench_per_gpu_numbers() -> None:
    got = ingest_dir(GPT_OSS, gpus=16, decode_gpus=8)
    assert [r.concurrency for r in got] == [4, 8, 16, 32, 64, 128, 256, 512]
    assert got[0].level.per_gpu_throughput == 918.4321435036439 / 16
    for r in got:
        raw = _raw(Path(r.level.source))
        assert r.format == "vllm-bench" and r.level.ok
        assert r.level.per_gpu_throughput == pytest.approx(raw["total_token_throughput"] / 16)
        assert r.level.per_decode_gpu_output_throughput == pytest.approx(raw["output_throughput"] / 8)
        assert r.level.interactivity == pytest.approx(1000 / raw["median_tpot_ms"])
        assert r.concurrency == raw["max_concurrency"]


def test_raw_bench_needs_gpu_count() -> None:
    with pytest.raises(ResultError, match=r"concurrency_4\.json: gpus unknown: pass gpus="):
        ingest_file(GPT_OSS / "concurrency_4.json")


def test_failed_run_is_a_level_where_every_request_failed() -> None:
    """A dead run is read, never refused as unknown: a level with nothing in it, whose problems say so (its
    stack fails); never a zero-throughput point of a curve."""
    assert _raw(FAILED)["completed"] == 0
    level = ingest_file(FAILED, gpus=8).level
    assert not level.ok and level.problems() == [
        f"concurrency 64: every request failed (640 failed, 0 completed) ({FAILED.name})"]
    assert (level.completed, level.failed, level.num_prompts, level.per_gpu_throughput) == (0, 640, 640, 0.0)


def test_kv_offload_tp8_on_vs_off_matched_ratio() -> None:
    got = ingest_dir(OFFLOAD)
    assert len(got) == len(list(OFFLOAD.glob("*.json")))
    assert [r.concurrency for r in got] == sorted(r.concurrency for r in got)
    tp8 = [r for r in got if r.tp == 8]
    assert all(r.gpus == 8 and r.ep == 8 and r.scenario == "agentic-coding" for r in tp8)
    on = {r.concurrency: r.level for r in tp8 if r.offload_mode == "on"}
    off = {r.concurrency: r.level for r in tp8 if r.offload_mode == "off"}

    raw: dict[str, dict[int, dict[str, Any]]] = {"on": {}, "off": {}}
    for f in OFFLOAD.glob("*.json"):
        d = _raw(f)
        if d["tp"] == 8:
            raw[d["offload_mode"]][d["users"]] = d
    matched = sorted(raw["on"].keys() & raw["off"].keys())
    assert sorted(on.keys() & off.keys()) == matched and len(matched) == 9
    for c in matched:
        expect = (raw["on"][c]["total_tput_tps"] / 8) / (raw["off"][c]["total_tput_tps"] / 8)
        assert on[c].per_gpu_throughput / off[c].per_gpu_throughput == pytest.approx(expect)
        # No median_tpot in agentic files: median_itl (seconds) stands in, see ingest.py.
        assert on[c].interactivity == pytest.approx(1 / raw["on"][c]["median_itl"])
        assert on[c].median_ttft_ms == pytest.approx(raw["on"][c]["median_ttft"] * 1000)
    # concurrency 12: offload on serves 715.8 vs 221.9 tok/s/GPU off
    assert on[12].per_gpu_throughput / off[12].per_gpu_throughput == pytest.approx(3.22548, rel=1e-5)


def test_agentic_shortfall_warned_and_not_ok() -> None:
    got = ingest_dir(OFFLOAD)
    short = []
    for f in OFFLOAD.glob("*.json"):
        d = _raw(f)
        if d["num_requests_successful"] < d["num_requests_total"]:
            short.append(f.name)
    assert short
    warned = [r for r in got if any("requests succeeded" in w for w in r.warnings)]
    assert len(warned) == len(short)
    assert sorted(Path(r.level.source).name for r in warned) == sorted(short)
    assert all(not r.level.ok for r in warned)
    assert all(r.level.ok for r in got if r not in warned)

    r = next(r for r in got if r.tp == 8 and r.concurrency == 64 and r.offload_mode == "off")
    name = Path(r.level.source).name
    assert r.warnings == [f"{name}: 68 of 121 requests succeeded (56%)"]
    assert (r.level.completed, r.level.failed, r.level.num_prompts) == (68, 53, 121)


def test_inferencex_single_node_aggregated() -> None:
    for f in sorted((DATA / "single-node").glob("agg_kimik2.5_*.json")):
        raw, r = _raw(f), ingest_file(f)
        assert (r.format, r.producer, r.hw, r.framework, r.tp, r.gpus) == (
            "inferencex", "fixed-seq-len", "mi355x", "vllm", 8, 8)
        assert (r.spec_decoding, r.precision, r.dp_attention, r.disagg) == ("mtp", "int4", False, False)
        assert r.concurrency == raw["conc"] and (r.isl, r.osl) == (raw["isl"], raw["osl"])
        assert r.level.per_gpu_throughput == raw["tput_per_gpu"]
        assert r.level.total_throughput == pytest.approx(raw["tput_per_gpu"] * 8)
        assert r.level.interactivity == pytest.approx(raw["median_intvty"])
        assert r.level.median_tpot_ms == pytest.approx(raw["median_tpot"] * 1000)
        assert any("request counts not recorded" in w for w in r.warnings)
        # not "every request failed": the pipeline asked conc x 10 prompts and kept no run with >5% failed
        assert r.level.ok and r.level.completed == r.level.num_prompts == 10 * raw["conc"]


def test_garbage_and_truncated_json_name_the_file(tmp_path: Path) -> None:
    truncated = tmp_path / "concurrency_4.json"
    truncated.write_text((GPT_OSS / "concurrency_4.json").read_text()[:300])
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xffnot json")
    for f in (truncated, garbage):
        with pytest.raises(ResultError, match=f.name):
            ingest_file(f, gpus=16)
    # a list of eval rows parses: not a usage error, a file that is no result (the replay skips it)
    with pytest.raises(SkipResult, match=r"gsm8k-evals\.json: not a result file"):
        ingest_file(DATA / "gsm8k-evals.json")


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    d = _raw(GPT_OSS / "concurrency_8.json")
    del d["median_tpot_ms"]
    f = tmp_path / "concurrency_8.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ResultError, match=r"concurrency_8\.json: field 'median_tpot_ms' missing"):
        ingest_file(f, gpus=16)
    agentic = next(OFFLOAD.glob("agg_*users64_offloadoff*.json"))
    d = _raw(agentic)
    del d["median_itl"]  # the mean stands in, and the warnings say so
    (tmp_path / agentic.name).write_text(json.dumps(d))
    r = ingest_file(tmp_path / agentic.name)
    assert r.level.median_tpot_ms == pytest.approx(d["mean_itl"] * 1000)
    assert any("stand-ins: mean ITL for median TPOT" in w for w in r.warnings)
    for stat in ("mean", "p90", "p99", "p99.9"):
        del d[f"{stat}_itl"]
    (tmp_path / agentic.name).write_text(json.dumps(d))
    with pytest.raises(ResultError, match=rf"{agentic.name}: field 'median_itl' missing"):
        ingest_file(tmp_path / agentic.name)


def _sglang_record(conc: int, tpot_ms: float) -> dict[str, Any]:
    # Keys of the result dict saved by sglang's bench_serving (python/sglang/bench_serving.py).
    return {
        "backend": "sglang", "dataset_name": "random", "request_rate": float("inf"),
        "max_concurrency": conc, "duration": 50.0, "completed": 100, "total_input_tokens": 102400,
        "total_output_tokens": 51200, "request_throughput": 2.0, "input_throughput": 2048.0,
        "output_throughput": 1024.0, "median_e2e_latency_ms": 9000.0, "median_ttft_ms": 120.0,
        "p99_ttft_ms": 400.0, "median_tpot_ms": tpot_ms, "p99_tpot_ms": tpot_ms * 1.5,
        "median_itl_ms": tpot_ms, "concurrency": conc * 0.93,
    }  # fmt: skip


def test_sglang_bench_serving(tmp_path: Path) -> None:
    f = tmp_path / "sglang_one.json"
    f.write_text(json.dumps(_sglang_record(16, 12.5)))
    r = ingest_file(f, gpus=4)
    assert (r.format, r.concurrency, r.gpus, r.decode_gpus) == ("sglang-bench", 16, 4, 4)
    assert r.level.total_throughput == 2048.0 + 1024.0
    assert r.level.per_gpu_throughput == (2048.0 + 1024.0) / 4
    assert r.level.interactivity == 1000 / 12.5
    assert r.level.median_e2el_ms == 9000.0
    # SGLang appends one line per run: a JSONL sweep is read record by record, sorted by the cap.
    sweep = tmp_path / "sweep" / "sglang.jsonl"
    sweep.parent.mkdir()
    sweep.write_text("".join(json.dumps(_sglang_record(c, t)) + "\n" for c, t in [(64, 30.0), (8, 10.0)]))
    with pytest.raises(ResultError, match="holds 2 results"):
        ingest_file(sweep, gpus=4)
    got = ingest_dir(sweep.parent, gpus=4)
    assert [(r.concurrency, r.level.interactivity) for r in got] == [(8, 100.0), (64, 1000 / 30.0)]
    dead = tmp_path / "dead.json"
    dead.write_text(json.dumps(_sglang_record(16, 0.0) | {"completed": 0, "output_throughput": 0.0}))
    # a dead run is a level where every request failed (its stack fails saying so), not an error
    assert ingest_file(dead, gpus=4).level.problems()[0].startswith("concurrency 16: every request failed")
