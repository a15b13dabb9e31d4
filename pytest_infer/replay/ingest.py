"""Results measured elsewhere, read into `Level`s: raw `vllm bench serve`, SGLang `bench_serving`, and
InferenceX aggregated JSON (fixed-sequence and agentic, every schema the pipeline wrote), one object per
file, per JSONL line, or per element of a JSON list (InferenceX's collected `agg_bmk.json`).

A run where every request failed reads as a level with nothing in it (`Level.problems` says so), never a
slow pass and never an error. What is no concurrency-sweep result at all (a config JSON, an eval table, a
request-rate run) raises `SkipResult`, which the replay lists as skipped. Where a field comes from is cited
as repository, path and commit:

- IX   SemiAnalysisAI/InferenceX @ 843c6254ff69b567f772f6a5fd97675af3d04431 (2026-08-22) unless noted
- APP  SemiAnalysisAI/InferenceX-app @ 77ca49a679198bbf593bd1a57fe26a27c9967bb3
- VLLM vllm-project/vllm vllm/benchmarks/serve.py @ 009e6d4a1cd6ba3fb2a9fc00f4ec06f5297232a1
- SGL  sgl-project/sglang python/sglang/benchmark/metrics.py @ 6e48df336a77303519023e2f95009509f0e94e83 (new),
       python/sglang/bench_serving.py @ 0033168f0f58b2bc05aa0273bd475d9c01bafb1c (old)
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from pytest_infer.store.records import Level, ResultError

Format = Literal["vllm-bench", "sglang-bench", "inferencex"]
# Which InferenceX aggregation wrote a file (they differ in names, statistics and request accounting):
# fixed-seq-len  IX utils/process_result.py: `conc`, latencies in seconds, `median_*`, no request counts
# kv-cache-tester  IX experimental/multiturn/vllm_benchmark (commit d62560865056703a287b01052aaf8fb4778831cf):
#                `users`, `offload_mode: on|off`, `median_itl`, `median_ttlt`, requests total / successful
# agentic-flat   IX utils/process_agentic_result.py, v0.1 (b7ae44045, 2026-05-01: `offloading`, median_*) and
#                aiperf v0.2-v0.3 (e92a9bf97 2026-05-17 .. 1b234994f 2026-06-02: mean/p75/p90/p95 only, and
#                num_requests_total == num_requests_successful: error records were dropped before counting)
# agentx-v1      IX utils/agentic/aggregation/process_agentic_result.py (AgentX v1.0, 303669b0e, 2026-07-02 ..
#                today): nested `request_metrics`, `kv_offloading: none|dram`, `request_accounting`
Producer = Literal["fixed-seq-len", "kv-cache-tester", "agentic-flat", "agentx-v1", ""]

# IX .github/workflows/benchmark-tmpl.yml `AIPERF_FAILED_REQUEST_THRESHOLD: '0.10'`, enforced before upload by
# utils/agentic/validation/validate_agentic_result.py (errors / completed <= threshold) since AgentX v1.0.
AGENTX_FAILURE_THRESHOLD = 0.10
# IX benchmarks/*.sh run the fixed-sequence client with `--num-prompts "$((CONC * 10))"`, and that client
# (utils/bench_serving/benchmark_serving.py) exits non-zero past a 5% failure rate, so no aggregate is made.
INFERENCEX_PROMPTS_PER_USER = 10

# KV-cache offload as the files spell it: IX validation.py `offloading: none|cpu|ssd` (v0.1), plus
# `lmcache|lmcache-mp|hicache` (v0.3); `kv_offloading: none|dram` (v1.0 on; the backend, e.g. lmcache,
# hicache, mooncake, native, is in `kv_offload_backend.name`); `offload_mode: on|off` (kv-cache-tester).
OFFLOAD_ON = frozenset({"on", "dram", "cpu", "ssd", "lmcache", "lmcache-mp", "hicache"})
OFF_VALUES = frozenset({"", "none", "off", "false", "no", "0"})
OFFLOAD_FIELDS = ("kv_offloading", "offloading", "offload_mode")


class SkipResult(ResultError):
    """Not a concurrency-sweep result this replay reads (unknown format, a request-rate run): the replay
    skips it and lists it, one 'path: reason' line. Not a usage error, unlike unreadable files."""


class Ingested(BaseModel):
    """One result record: the level plus what the file says about the deployment."""

    level: Level
    format: Format
    producer: Producer = ""  # which InferenceX aggregation wrote it (see Producer); "" for raw bench files
    gpus: int  # GPUs the per-GPU numbers are divided by (prefill + decode for disagg)
    decode_gpus: int
    concurrency: int
    hw: str | None = None
    framework: str | None = None
    model: str | None = None
    precision: str | None = None
    spec_decoding: str | None = None
    disagg: bool | None = None
    tp: int | None = None
    ep: int | None = None
    pp: int | None = None
    pcp: int | None = None
    dp_attention: bool | None = None
    offload_mode: Literal["on", "off"] | None = None  # normalised from whichever offload field the file has
    offload_backend: str | None = None  # lmcache, hicache, ...: kv_offload_backend.name or the offloading value
    scenario: str | None = None
    isl: int | None = None
    osl: int | None = None
    warnings: list[str] = []


def _need(data: dict[str, Any], name: str, source: str) -> Any:
    if data.get(name) is None:
        raise ResultError(f"{source}: field {name!r} missing")
    return data[name]


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_bool(v: Any) -> bool | None:
    # InferenceX writes dp_attention as the string "true"/"false" (it comes from an env var).
    return v if v is None or isinstance(v, bool) else str(v).strip().lower() == "true"


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() == "true"


def _num(v: Any) -> float | None:
    """A finite or infinite number, or None ('trace', null, NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


class Offload(NamedTuple):
    field: str  # the field it was read from
    value: Any  # as written
    on: bool | None  # None: a value that maps to neither
    backend: str | None


def offload_of(data: dict[str, Any]) -> Offload | None:
    """KV-cache offload as the file states it (see OFFLOAD_ON), or None when it says nothing."""
    field = next((f for f in OFFLOAD_FIELDS if f in data), None)
    if field is None:
        return None
    value = data[field]
    text = str(value if value is not None else "").strip().lower()
    on = True if text in OFFLOAD_ON else False if text in OFF_VALUES else None
    backend = data.get("kv_offload_backend")
    name = backend.get("name") if isinstance(backend, dict) else backend
    if name is None and text in {"lmcache", "lmcache-mp", "hicache"}:
        name = text
    return Offload(field, value, on, None if name is None else str(name))


def detect_format(data: dict[str, Any], source: str) -> Format:
    """Which producer wrote `data`; SkipResult when none did."""
    # InferenceX: `tput_per_gpu` (fixed-seq-len and flat agentic), nested `request_metrics` (AgentX v1), or
    # agentic request counts with no throughput at all (a dead agentic run writes no tput fields).
    if "tput_per_gpu" in data or "request_metrics" in data or ("num_requests_total" in data and "hw" in data):
        return "inferencex"
    if "total_token_throughput" in data:
        return "vllm-bench"
    # SGLang's result has input_throughput and *_e2e_latency_ms, where vLLM has total_token_throughput
    # and *_e2el_ms. input_throughput alone is not enough: other tools write it with latencies in seconds.
    if "median_e2e_latency_ms" in data or ("input_throughput" in data and "median_ttft_ms" in data):
        return "sglang-bench"
    raise SkipResult(
        f"{source}: not a result: unknown format (none of 'tput_per_gpu', 'request_metrics', 'total_token_throughput', "
        "'median_e2e_latency_ms')"
    )


def _rate_text(v: Any) -> str:
    f = _num(v)
    return "inf" if f is not None and math.isinf(f) else f"{f:g}" if f is not None else repr(v)


def sweep_check(data: dict[str, Any], fmt: Format, source: str) -> None:
    """Raw bench records must be one level of a concurrency sweep: a positive `max_concurrency`. A run paced
    by request rate alone (vLLM and SGLang write `max_concurrency: null` then) is skipped, never read as
    concurrency 0."""
    if fmt == "inferencex":
        return
    cap = data.get("max_concurrency")
    if cap is not None and _num(cap) is not None and float(cap) >= 1:
        return
    rate = data.get("request_rate")
    what = (f"a request-rate run (request_rate {_rate_text(rate)}, max_concurrency {json.dumps(cap)})"
            if rate is not None else f"no concurrency cap (max_concurrency {json.dumps(cap)})")
    raise SkipResult(f"{source}: {what}: the suites compare concurrency sweeps; re-run with --max-concurrency")


def check_record(data: dict[str, Any], source: str) -> Format:
    """The record's format, or SkipResult saying why the replay does not read it."""
    fmt = detect_format(data, source)
    sweep_check(data, fmt, source)
    return fmt


def _bench_gpus(gpus: int | None, decode_gpus: int | None, source: str) -> tuple[int, int]:
    if gpus is None:
        raise ResultError(f"{source}: gpus unknown: pass gpus= (the file does not record its GPU count)")
    if gpus < 1 or (decode_gpus is not None and not 1 <= decode_gpus <= gpus):
        raise ResultError(f"{source}: gpus={gpus}, decode_gpus={decode_gpus} is not a GPU count")
    return gpus, decode_gpus or gpus  # aggregated serving: every GPU decodes


def _paced(data: dict[str, Any], source: str) -> list[str]:
    rate = _num(data.get("request_rate"))
    if rate is None or math.isinf(rate):
        return []
    return [f"{Path(source).name}: arrivals paced at request_rate {rate:g}/s under max_concurrency "
            f"{data.get('max_concurrency')}: the level may not have kept every slot busy"]


def _from_vllm(data: dict[str, Any], source: str, gpus: int | None, decode_gpus: int | None) -> Ingested:
    # VLLM main_async result_json: date, backend, model_id, num_prompts, request_rate ("inf" or a number),
    # burstiness, max_concurrency (None unless --max-concurrency), then benchmark(): duration, completed,
    # failed (absent in older clients, e.g. IX utils/bench_serving/benchmark_serving.py, which also writes the
    # key "request_goodput:"), total_input_tokens, total_output_tokens, output_throughput,
    # total_token_throughput, {mean,median,std,p99,...}_{ttft,tpot,itl,e2el}_ms. The dataset's lengths and
    # ignore_eos are not saved, so the expected output is unknown here.
    sweep_check(data, "vllm-bench", source)
    g, d = _bench_gpus(gpus, decode_gpus, source)
    level = Level.from_bench(data, g, d, source)
    warnings = _paced(data, source)
    if data.get("num_prompts") is None and "failed" not in data:
        warnings.append(f"{Path(source).name}: request count not recorded, failed requests cannot be detected")
    return Ingested(level=level, format="vllm-bench", gpus=g, decode_gpus=d, concurrency=level.concurrency,
                    model=data.get("model_id"), warnings=warnings)


def _sglang_expected(data: dict[str, Any], level: Level) -> None:
    """SGLang saves its dataset arguments. Random lengths are drawn from [osl * random_range_ratio, osl]
    (SGL sample_random_requests), so ratio 1 is a fixed length; SGLang's clients send ignore_eos unless
    --disable-ignore-eos, which the file does not record: its default is assumed."""
    if not str(data.get("dataset_name") or "").startswith("random") or level.completed == 0:
        return
    osl, ratio = _num(data.get("random_output_len")), _num(data.get("random_range_ratio"))
    if osl is None or ratio is None or osl < 1 or not 0 <= ratio <= 1:
        return
    if ratio == 1:
        level.expected_output_tokens = level.completed * int(osl)
    nested = data.get("details")  # --output-details: under "details" in the new writer, top level before
    level.expect_at_least(nested if isinstance(nested, dict) else data, max(int(osl * ratio), 1))


def _from_sglang(data: dict[str, Any], source: str, gpus: int | None, decode_gpus: int | None) -> Ingested:
    # SGL save_results (new) / benchmark() (old): backend, dataset_name, request_rate (a float, inf written as
    # Infinity, or "trace"), max_concurrency (None unless set), random_input_len, random_output_len,
    # random_range_ratio, duration, completed (successes only: no num_prompts, no failed), total_input_tokens,
    # total_output_tokens, input_throughput, output_throughput, total_throughput (new only),
    # {mean,median,std,p99}_{ttft,tpot,itl}_ms, *_e2e_latency_ms, concurrency (the *measured* mean), and
    # accept_length. The oldest writer saved no median_tpot_ms: median_itl_ms stands in.
    sweep_check(data, "sglang-bench", source)
    g, d = _bench_gpus(gpus, decode_gpus, source)
    name = Path(source).name
    completed = int(_need(data, "completed", source))
    warnings = _paced(data, source)
    prompts = data.get("num_prompts")
    if prompts is None:
        warnings.append(f"{name}: request count not recorded, failed requests cannot be detected")
    failed = int(data.get("failed") or 0)
    if prompts is not None:
        failed = max(failed, int(prompts) - completed)

    def ms(field: str, *alts: str) -> float:
        for f in (field, *alts):
            v = _num(data.get(f))
            if v is not None:
                return v if completed else 0.0
        if completed:
            raise ResultError(f"{source}: field {field!r} missing")
        return 0.0

    tpot_field = "median_tpot_ms"
    if completed and _num(data.get("median_tpot_ms")) is None and _num(data.get("median_itl_ms")) is not None:
        tpot_field = "median_itl_ms"
        warnings.append(f"{name}: median ITL stands in for median TPOT (the file has no median_tpot_ms)")
    out = float(data.get("output_throughput") or 0.0) if not completed else float(
        _need(data, "output_throughput", source))
    total = _num(data.get("total_throughput"))
    if total is None:  # older writers: total = (input + output tokens) / duration
        total = (float(data.get("input_throughput") or 0.0) if not completed else
                 float(_need(data, "input_throughput", source))) + out
    rate = _num(data.get("request_rate"))
    # Not `concurrency`: SGLang saves the *measured* mean concurrency there; the cap is max_concurrency.
    as_vllm = {
        "max_concurrency": data.get("max_concurrency"),
        "num_prompts": int(prompts) if prompts is not None else completed + failed,
        "completed": completed,
        "failed": failed,
        "duration": float(data.get("duration") or 0.0) if not completed else _need(data, "duration", source),
        "output_throughput": out,
        "total_token_throughput": total,
        "median_ttft_ms": ms("median_ttft_ms"),
        "median_tpot_ms": ms(tpot_field),
        "median_e2el_ms": (_num(data.get("median_e2e_latency_ms")) or 0.0) if completed else 0.0,
        "p99_ttft_ms": _num(data.get("p99_ttft_ms")) or 0.0,
        "p99_tpot_ms": _num(data.get("p99_tpot_ms")) or _num(data.get("p99_itl_ms")) or 0.0,
        "total_output_tokens": data.get("total_output_tokens"),
        "request_rate": rate,
    }
    level = Level.from_bench(as_vllm, g, d, source)
    _sglang_expected(data, level)
    return Ingested(level=level, format="sglang-bench", gpus=g, decode_gpus=d, concurrency=level.concurrency,
                    framework="sglang", model=data.get("model_id") or data.get("model"), warnings=warnings)


def inferencex_gpus(data: dict[str, Any], source: str) -> tuple[int, int]:
    """(all GPUs, decode GPUs) the file's per-GPU numbers were divided by. IX utils/process_result.py:
    single node `tp * pp * pcp_size` (DCP does not add GPUs); multinode `num_prefill_gpu + num_decode_gpu`,
    output by decode GPUs only. IX process_agentic_result.py _gpu_shape: the same, and an aggregated
    multinode worker writes num_decode_gpu 0 (every GPU decodes)."""
    if _truthy(data.get("is_multinode")):
        p, dec = int(_need(data, "num_prefill_gpu", source)), int(_need(data, "num_decode_gpu", source))
        return p + dec, dec if dec > 0 else p + dec
    g = int(_need(data, "tp", source)) * int(data.get("pp") or 1) * int(data.get("pcp_size") or 1)
    return g, g


def _agentx_flat(data: dict[str, Any]) -> dict[str, Any]:
    """AgentX v1 nested metrics as the flat names older files use (as APP's agentic flattening does, per
    IX docs/results-and-ingestion.md: p50 is the median; full-response ITL takes precedence when present)."""
    rm = data.get("request_metrics") or {}
    lat, tokens, tput = rm.get("latency") or {}, rm.get("tokens") or {}, rm.get("throughput") or {}
    flat = {k: v for k, v in data.items() if k not in ("request_metrics", "server_metrics")}
    itl = lat.get("full_response_itl") or lat.get("itl") or {}
    for metric, block in (("ttft", lat.get("ttft")), ("e2el", lat.get("e2el")), ("itl", itl), ("tpot", itl)):
        for stat, v in (block or {}).items():
            flat[f"{'median' if stat == 'p50' else stat}_{metric}"] = v
    for key, block in (("input_tokens", tokens.get("input")), ("output_tokens_actual", tokens.get("output_actual")),
                       ("output_tokens_expected", tokens.get("output_expected"))):
        for stat, v in (block or {}).items():
            flat[f"{'median' if stat == 'p50' else stat}_{key}"] = v
    per_gpu = tput.get("per_gpu") or {}
    flat.update({k: v for k, v in {
        "total_tput_tps": (tput.get("total") or {}).get("tokens_per_second"),
        "output_tput_tps": (tput.get("output") or {}).get("tokens_per_second"),
        "duration_seconds": tput.get("duration_seconds"),
        "tput_per_gpu": per_gpu.get("total_tput_tps"),
        "output_tput_per_gpu": per_gpu.get("output_tput_tps"),
    }.items() if v is not None})
    return flat


def _producer(data: dict[str, Any]) -> Producer:
    if "request_metrics" in data:
        return "agentx-v1"
    if "num_requests_total" in data or data.get("scenario_type"):
        return "kv-cache-tester" if "offload_mode" in data or "users" in data else "agentic-flat"
    return "fixed-seq-len"


def _from_inferencex(
    data: dict[str, Any], source: str, gpus: int | None, decode_gpus: int | None
) -> Ingested:
    name = Path(source).name
    producer = _producer(data)
    agentic = producer != "fixed-seq-len"
    flat = _agentx_flat(data) if producer == "agentx-v1" else data
    warnings: list[str] = []
    g, d = inferencex_gpus(flat, source)
    if gpus is not None and (gpus, decode_gpus or gpus) != (g, d):
        warnings.append(f"{name}: file counts {g} GPUs ({d} decode), not gpus={gpus}: using the file's")
    conc = int(_need(flat, "conc", source) if "users" not in flat else flat["users"])

    threshold: float | None = None
    if agentic:
        ok_n = int(_need(flat, "num_requests_successful", source))
        acct = flat.get("request_accounting")
        if isinstance(acct, dict) and "records_warmup_dropped" in acct:
            # records_total counts warmup rows; a warmup row with an error counts as both (IX request_metrics.py
            # load_records_with_accounting). Errors among the measured requests: dropped - warmup.
            warm = int(acct["records_warmup_dropped"])
            total_n = int(acct.get("records_total", flat.get("num_requests_total", ok_n))) - warm
            failed = max(int(acct.get("records_dropped_total", total_n + warm - ok_n)) - warm, 0)
            total_n = max(total_n, ok_n + failed)
            threshold = AGENTX_FAILURE_THRESHOLD
        else:
            total_n = int(_need(flat, "num_requests_total", source))
            failed = max(total_n - ok_n, 0)
            if producer == "agentic-flat" and total_n == ok_n and "median_ttft" not in flat:
                warnings.append(f"{name}: failed requests not recorded (this aggregate counted successes only)")
        if 0 < ok_n < total_n:
            pct = 100 * ok_n / total_n
            warnings.append(f"{name}: {ok_n} of {total_n} requests succeeded ({pct:.1f}%)" if pct > 99.5 else
                            f"{name}: {ok_n} of {total_n} requests succeeded ({pct:.0f}%)")
        duration = float(flat.get("duration_seconds") or 0.0)
    else:
        # Pre-aggregated from a bench run: request counts and duration did not survive aggregation. The
        # pipeline asked conc x 10 prompts and refused runs with more than 5% failed (INFERENCEX_PROMPTS_PER_USER).
        total_n = ok_n = INFERENCEX_PROMPTS_PER_USER * conc
        failed = 0
        duration = 0.0
        warnings.append(f"{name}: request counts not recorded, failed requests cannot be detected")

    subs: list[str] = []

    def stat(metrics: tuple[str, ...], want: str, required: bool) -> float:
        """Seconds. `want` median or p99; what stands in when the file lacks it is said in the warnings."""
        order = ("median", "p50", "mean") if want == "median" else ("p99", "p95", "p90")
        for i, s in enumerate(order):
            for m in metrics:
                v = _num(flat.get(f"{s}_{m}"))
                if v is not None:
                    if i == len(order) - 1 or (want == "p99" and i > 0):
                        subs.append(f"{s} {m.upper()} for {want} {metrics[0].upper()}")
                    return v
        if required:
            raise ResultError(f"{source}: field {f'{want}_{metrics[-1]}'!r} missing")
        return 0.0

    # Agentic (kv-cache-tester / aiperf) per-request "ITL" is the request's mean decode gap,
    # (e2e - ttft) / (output tokens - 1), i.e. vLLM's per-request TPOT, and InferenceX's own aggregation
    # writes tpot = itl; interactivity is 1 / that statistic, as APP's dashboard plots `median_intvty`
    # (packages/app/src/components/inference/inference-chart-config.json: x median_intvty, y tput_per_gpu;
    # IX process_result.py writes intvty = 1000 / tpot_ms).
    tpot_metrics = ("tpot", "itl") if agentic else ("tpot",)
    live = ok_n > 0
    tpot_s = stat(tpot_metrics, "median", required=live)
    if live and tpot_s <= 0:
        raise ResultError(f"{source}: field 'median_{tpot_metrics[-1]}' is {tpot_s}: no decode steps measured")
    per_gpu = _num(flat.get("tput_per_gpu")) or 0.0
    if not agentic and per_gpu <= 0:
        raise ResultError(f"{source}: field 'tput_per_gpu' is {per_gpu}: nothing was measured")
    if live and agentic and "tput_per_gpu" not in flat:
        field = "request_metrics.throughput.per_gpu" if producer == "agentx-v1" else "tput_per_gpu"
        raise ResultError(f"{source}: field {field!r} missing")
    # APP packages/app/src/lib/chart-utils.ts createChartDataPoint: tpPerGpu = entry.tput_per_gpu, as written.
    total = _num(flat.get("total_tput_tps")) if agentic else None
    total = per_gpu * g if total is None else total
    out = _num(flat.get("output_tput_tps")) if agentic else None
    if out is None:  # agentic divides output by every GPU; fixed-seq-len multinode by decode GPUs
        out = (_num(flat.get("output_tput_per_gpu")) or 0.0) * (d if not agentic else g)
    out_tokens = None
    if agentic and _num(flat.get("mean_output_tokens_actual")) is not None:
        out_tokens = round(float(flat["mean_output_tokens_actual"]) * ok_n)
    elif agentic and not live:
        out_tokens = 0

    ttft_s = stat(("ttft",), "median", required=live)
    e2el_s = stat(("e2el", "ttlt"), "median", required=False)
    p99_ttft_s = stat(("ttft",), "p99", required=False)
    p99_tpot_s = stat(tpot_metrics, "p99", required=False)
    if subs and live:
        warnings.append(f"{name}: statistics the file lacks, stand-ins: {', '.join(subs)}")
    off = offload_of(flat)
    level = Level(
        concurrency=conc,
        num_prompts=total_n,
        completed=ok_n,
        failed=failed,
        duration_s=duration,
        output_throughput=out,
        total_throughput=total,
        per_gpu_throughput=per_gpu,
        per_gpu_output_throughput=out / g,
        per_decode_gpu_output_throughput=out / d,
        interactivity=1.0 / tpot_s if tpot_s > 0 else 0.0,
        median_ttft_ms=ttft_s * 1000.0,
        median_tpot_ms=tpot_s * 1000.0,
        median_e2el_ms=e2el_s * 1000.0,
        p99_ttft_ms=p99_ttft_s * 1000.0,
        p99_tpot_ms=p99_tpot_s * 1000.0,
        source=source,
        # Agentic traces replay recorded turns without ignore_eos: their expected output is no floor.
        output_tokens=out_tokens,
        failure_threshold=threshold,
    )
    return Ingested(
        level=level,
        format="inferencex",
        producer=producer,
        gpus=g,
        decode_gpus=d,
        concurrency=conc,
        hw=flat.get("hw"),
        framework=flat.get("framework"),
        model=flat.get("model"),
        precision=flat.get("precision"),
        spec_decoding=flat.get("spec_decoding"),
        disagg=_opt_bool(flat.get("disagg")),
        tp=_opt_int(flat.get("tp")),
        ep=_opt_int(flat.get("ep")),
        pp=_opt_int(flat.get("pp")),
        pcp=_opt_int(flat.get("pcp_size")),
        dp_attention=_opt_bool(flat.get("dp_attention")),
        offload_mode=None if off is None or off.on is None else "on" if off.on else "off",
        offload_backend=None if off is None else off.backend,
        scenario=flat.get("scenario_type"),
        isl=_opt_int(flat.get("isl")),
        osl=_opt_int(flat.get("osl")),
        warnings=warnings,
    )


_READERS = {"vllm-bench": _from_vllm, "sglang-bench": _from_sglang, "inferencex": _from_inferencex}


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(source, object) per result in the file: one for a JSON object, one per line for JSONL (SGLang
    appends), one per element for a JSON list (IX utils/collect_results.py writes agg_bmk.json as a list of
    the collected aggregates). A file that cannot be read or parsed raises ResultError; one that parses but
    holds no objects raises SkipResult."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: cannot read: {e}") from None
    try:
        top = json.loads(text)
    except json.JSONDecodeError as e:
        lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        try:
            docs: list[tuple[str, Any]] = [(f"{path}:{i}", json.loads(ln)) for i, ln in lines]
        except json.JSONDecodeError:
            docs = []
        if len(docs) < 2:  # a JSONL reading needs several lines; otherwise report the JSON error
            raise ResultError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    else:
        if isinstance(top, list):
            docs = [(f"{path}[{i}]", el) for i, el in enumerate(top)]
            if not docs:
                raise SkipResult(f"{path}: not a result file (an empty JSON list)")
        else:
            docs = [(str(path), top)]
    for source, obj in docs:
        if not isinstance(obj, dict):
            where = "top level" if source == str(path) else "an element" if "[" in source else "a line"
            raise SkipResult(f"{path}: not a result object ({where} is {type(obj).__name__})")
    return docs


def ingest_record(source: str, data: dict[str, Any], gpus: int | None, decode_gpus: int | None) -> Ingested:
    return _READERS[check_record(data, source)](data, source, gpus, decode_gpus)


def _is_result(data: dict[str, Any], source: str) -> bool:
    try:
        detect_format(data, source)
    except SkipResult:
        return False
    return True


def ingest_file(path: Path, *, gpus: int | None = None, decode_gpus: int | None = None) -> Ingested:
    """One result file. `gpus`/`decode_gpus` are needed for raw bench files (they don't record them);
    InferenceX files carry their own."""
    docs = read_records(Path(path))
    if len(docs) > 1:
        if not any(_is_result(d, src) for src, d in docs):
            raise SkipResult(f"{path}: not a result file (none of its {len(docs)} records is a result)")
        kind = "a JSON list" if docs[0][0].endswith("[0]") else "JSONL"
        raise ResultError(f"{path}: holds {len(docs)} results ({kind}): ingest_dir reads each of them")
    return ingest_record(docs[0][0], docs[0][1], gpus, decode_gpus)


def ingest_dir(path: Path, *, gpus: int | None = None, decode_gpus: int | None = None) -> list[Ingested]:
    """Every *.json / *.jsonl result in a folder (not recursive), sorted by concurrency. Strict: one bad
    file raises, so a failed level never silently drops out of a sweep."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    if not files:
        raise ResultError(f"{path}: no *.json or *.jsonl result files")
    got = [ingest_record(src, d, gpus, decode_gpus) for f in files for src, d in read_records(f)]
    return sorted(got, key=lambda r: (r.concurrency, r.level.source))


# ---- InferenceX result file names ---------------------------------------------------------------------
# IX .github/workflows/benchmark-tmpl.yml RESULT_FILENAME_BASE (single node):
#   {EXP_NAME}_{PRECISION}_{FRAMEWORK}_tp{TP}-pp{PP}-dcp{DCP}-pcp{PCP}-ep{EP}-dpa{DPA}_disagg-{D}_spec-{S}_conc{C}_
#   {runner}; before PP/DCP/PCP (2026-07): _tp{TP}-ep{EP}-dpa{DPA}_ (tests/data/inferencex/single-node). The
#   kv-cache-tester files put `offload{on|off}` in EXP_NAME (tests/data/inferencex/b200-dsr1-fp4-vllm-kv-offload).
#   Multinode names (prefill-tp.., decode-tp..) are not parsed.
_NAME = re.compile(
    r"_(?P<precision>[a-z0-9]+)_(?P<framework>[a-z0-9-]+)_tp(?P<tp>\d+)(?:-pp(?P<pp>\d+))?(?:-dcp\d+)?"
    r"(?:-pcp(?P<pcp>\d+))?-ep(?P<ep>\d+)-dpa(?P<dpa>true|false)_disagg-(?P<disagg>true|false)"
    r"_spec-(?P<spec>[a-z0-9]+)_conc(?P<conc>\d+)_")
_NAME_OFFLOAD = re.compile(r"_offload(on|off)_")


class NameField(NamedTuple):
    field: str  # the InferenceX field it corresponds to
    value: Any  # normalised like the field
    token: str  # as the name spells it


def name_fields(file_name: str) -> list[NameField]:
    """What an InferenceX result file name says about its run ([] for any other name)."""
    hit = _NAME.search(file_name)
    if not hit:
        return []
    g = hit.groupdict()
    out = [NameField("precision", g["precision"], g["precision"]),
           NameField("framework", g["framework"], g["framework"]),
           NameField("tp", int(g["tp"]), f"tp{g['tp']}"),
           NameField("ep", int(g["ep"]), f"ep{g['ep']}"),
           NameField("dp_attention", g["dpa"] == "true", f"dpa{g['dpa']}"),
           NameField("disagg", g["disagg"] == "true", f"disagg-{g['disagg']}"),
           NameField("spec_decoding", g["spec"], f"spec-{g['spec']}"),
           NameField("conc", int(g["conc"]), f"conc{g['conc']}")]
    if g["pp"]:
        out.append(NameField("pp", int(g["pp"]), f"pp{g['pp']}"))
    if g["pcp"]:
        out.append(NameField("pcp_size", int(g["pcp"]), f"pcp{g['pcp']}"))
    if off := _NAME_OFFLOAD.search(file_name):
        out.append(NameField("offload_mode", off.group(1), f"offload{off.group(1)}"))
    return out


def field_value(data: dict[str, Any], field: str) -> Any:
    """`data`'s value for a NameField's field, normalised the same way (None: the file does not say)."""
    if field == "conc":
        v = data.get("conc", data.get("users"))
        return None if v is None else int(v)
    if field == "offload_mode":
        off = offload_of(data)
        return None if off is None or off.on is None else "on" if off.on else "off"
    if field not in data or data[field] is None:
        return None
    v = data[field]
    if field in ("dp_attention", "disagg"):
        return _truthy(v)
    if field in ("tp", "ep", "pp", "pcp_size"):
        return int(v)
    return str(v).strip().lower()
