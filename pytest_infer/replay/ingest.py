"""Results measured elsewhere, read into `Level`s: raw `vllm bench serve`, SGLang `bench_serving`, and
InferenceX aggregated JSON. A run that measured nothing is refused, never read as a zero-throughput level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from pytest_infer.store.records import Level, ResultError

Format = Literal["vllm-bench", "sglang-bench", "inferencex"]


class Ingested(BaseModel):
    """One result file (or one JSONL record): the level plus what the file says about the deployment."""

    level: Level
    format: Format
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
    dp_attention: bool | None = None
    offload_mode: str | None = None
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


def detect_format(data: dict[str, Any], source: str) -> Format:
    if "tput_per_gpu" in data:
        return "inferencex"
    if "total_token_throughput" in data:
        return "vllm-bench"
    # SGLang's result has input_throughput and *_e2e_latency_ms, where vLLM has total_token_throughput
    # and *_e2el_ms.
    if "input_throughput" in data or "median_e2e_latency_ms" in data:
        return "sglang-bench"
    raise ResultError(
        f"{source}: unknown result format (none of 'tput_per_gpu', 'total_token_throughput', "
        "'input_throughput')"
    )


def _bench_gpus(gpus: int | None, decode_gpus: int | None, source: str) -> tuple[int, int]:
    if gpus is None:
        raise ResultError(f"{source}: gpus unknown: pass gpus= (the file does not record its GPU count)")
    if gpus < 1 or (decode_gpus is not None and not 1 <= decode_gpus <= gpus):
        raise ResultError(f"{source}: gpus={gpus}, decode_gpus={decode_gpus} is not a GPU count")
    return gpus, decode_gpus or gpus  # aggregated serving: every GPU decodes


def _from_vllm(data: dict[str, Any], source: str, gpus: int | None, decode_gpus: int | None) -> Ingested:
    _need(data, "completed", source)  # 0 is read: a level where every request failed (Level.problems)
    g, d = _bench_gpus(gpus, decode_gpus, source)
    level = Level.from_bench(data, g, d, source)
    return Ingested(
        level=level,
        format="vllm-bench",
        gpus=g,
        decode_gpus=d,
        concurrency=level.concurrency,
        model=data.get("model_id"),
    )


def _from_sglang(data: dict[str, Any], source: str, gpus: int | None, decode_gpus: int | None) -> Ingested:
    # Field names from sgl-project/sglang python/sglang/bench_serving.py, the `result` dict of benchmark().
    _need(data, "completed", source)  # 0 is read: a level where every request failed (Level.problems)
    g, d = _bench_gpus(gpus, decode_gpus, source)
    out = float(_need(data, "output_throughput", source))
    # The saved result has no total throughput; total = (input + output tokens) / duration.
    total = data.get("total_throughput")
    if total is None:
        total = float(_need(data, "input_throughput", source)) + out
    completed = int(data["completed"])
    warnings = []
    if data.get("num_prompts") is None:
        # Only successes are counted and the prompt count is not saved: failures cannot be seen.
        warnings.append(
            f"{Path(source).name}: request count not recorded, failed requests cannot be detected"
        )
    # Not `concurrency`: SGLang saves the *measured* mean concurrency there; the cap is max_concurrency.
    as_vllm = {
        "max_concurrency": data.get("max_concurrency"),
        "num_prompts": data.get("num_prompts") or completed,
        "completed": completed,
        "failed": int(data.get("num_prompts") or completed) - completed,
        "duration": _need(data, "duration", source),
        "output_throughput": out,
        "total_token_throughput": float(total),
        "median_ttft_ms": _need(data, "median_ttft_ms", source),
        "median_tpot_ms": _need(data, "median_tpot_ms", source),
        "median_e2el_ms": data.get("median_e2e_latency_ms", 0.0),
        "p99_ttft_ms": data.get("p99_ttft_ms", 0.0),
        "p99_tpot_ms": data.get("p99_tpot_ms", 0.0),
    }
    level = Level.from_bench(as_vllm, g, d, source)
    return Ingested(
        level=level,
        format="sglang-bench",
        gpus=g,
        decode_gpus=d,
        concurrency=level.concurrency,
        framework="sglang",
        warnings=warnings,
    )


def _from_inferencex(
    data: dict[str, Any], source: str, gpus: int | None, decode_gpus: int | None
) -> Ingested:
    name = Path(source).name

    def need(field: str) -> Any:
        return _need(data, field, source)

    warnings: list[str] = []
    # utils/process_result.py divides by TP on one node; multinode (disagg) divides total by prefill+decode
    # GPUs but output by decode GPUs only. The file's count is the one its per-GPU numbers used.
    if data.get("is_multinode"):
        d = int(need("num_decode_gpu"))
        g = int(need("num_prefill_gpu")) + d
        out = float(need("output_tput_per_gpu")) * d
    else:
        g = d = int(need("tp"))
        out = float(need("output_tput_per_gpu")) * g
    if gpus is not None and (gpus, decode_gpus or gpus) != (g, d):
        warnings.append(f"{name}: file counts {g} GPUs ({d} decode), not gpus={gpus}: using the file's")
    per_gpu = float(need("tput_per_gpu"))
    if per_gpu <= 0:
        raise ResultError(f"{source}: field 'tput_per_gpu' is {per_gpu}: nothing was measured")

    agentic = "num_requests_total" in data
    if agentic:
        total_n, ok_n = int(need("num_requests_total")), int(need("num_requests_successful"))
        if ok_n == 0:
            raise ResultError(f"{source}: field 'num_requests_successful' is 0: every request failed")
        if ok_n < total_n:
            warnings.append(f"{name}: {ok_n} of {total_n} requests succeeded ({100 * ok_n / total_n:.0f}%)")
        duration = float(need("duration_seconds"))
        # Agentic (kv-cache-tester / aiperf) files carry no median_tpot: their per-request "ITL" is the
        # request's mean decode gap, (e2e - ttft) / (output tokens - 1), i.e. vLLM's per-request TPOT, and
        # InferenceX's own aiperf path writes tpot = itl. So median_itl stands in for median_tpot.
        tpot_field, p99_tpot_field, e2el_field = "median_itl", "p99_itl", "median_ttlt"
        if data.get("median_tpot") is not None:
            tpot_field, p99_tpot_field = "median_tpot", "p99_tpot"
    else:
        # Pre-aggregated from a bench run: request counts and duration did not survive aggregation.
        total_n = ok_n = 0
        duration = 0.0
        warnings.append(f"{name}: request counts not recorded, failed requests cannot be detected")
        tpot_field, p99_tpot_field, e2el_field = "median_tpot", "p99_tpot", "median_e2el"
    tpot_s = float(need(tpot_field))
    if tpot_s <= 0:
        raise ResultError(f"{source}: field {tpot_field!r} is {tpot_s}: no decode steps measured")

    def ms(field: str) -> float:  # InferenceX stores latencies in seconds
        return float(data.get(field) or 0.0) * 1000.0

    conc = int(data["conc"] if "conc" in data else need("users"))
    level = Level(
        concurrency=conc,
        num_prompts=total_n,
        completed=ok_n,
        failed=total_n - ok_n,
        duration_s=duration,
        output_throughput=out,
        total_throughput=per_gpu * g,
        per_gpu_throughput=per_gpu,
        per_gpu_output_throughput=out / g,
        per_decode_gpu_output_throughput=out / d,
        interactivity=1.0 / tpot_s,
        median_ttft_ms=float(need("median_ttft")) * 1000.0,
        median_tpot_ms=tpot_s * 1000.0,
        median_e2el_ms=ms(e2el_field),
        p99_ttft_ms=ms("p99_ttft"),
        p99_tpot_ms=ms(p99_tpot_field),
        source=source,
    )
    return Ingested(
        level=level,
        format="inferencex",
        gpus=g,
        decode_gpus=d,
        concurrency=conc,
        hw=data.get("hw"),
        framework=data.get("framework"),
        model=data.get("model"),
        precision=data.get("precision"),
        spec_decoding=data.get("spec_decoding"),
        disagg=_opt_bool(data.get("disagg")),
        tp=_opt_int(data.get("tp")),
        ep=_opt_int(data.get("ep")),
        dp_attention=_opt_bool(data.get("dp_attention")),
        offload_mode=data.get("offload_mode"),
        scenario=data.get("scenario_type"),
        isl=_opt_int(data.get("isl")),
        osl=_opt_int(data.get("osl")),
        warnings=warnings,
    )


_READERS = {"vllm-bench": _from_vllm, "sglang-bench": _from_sglang, "inferencex": _from_inferencex}


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(source, object) per result in the file: one for JSON, one per line for JSONL (SGLang appends)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: cannot read: {e}") from None
    try:
        docs: list[tuple[str, Any]] = [(str(path), json.loads(text))]
    except json.JSONDecodeError as e:
        lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        try:
            docs = [(f"{path}:{i}", json.loads(ln)) for i, ln in lines]
        except json.JSONDecodeError:
            docs = []
        if len(docs) < 2:  # a JSONL reading needs several lines; otherwise report the JSON error
            raise ResultError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    for source, obj in docs:
        if not isinstance(obj, dict):
            raise ResultError(f"{source}: not a result object (top level is {type(obj).__name__})")
    return docs


def ingest_record(source: str, data: dict[str, Any], gpus: int | None, decode_gpus: int | None) -> Ingested:
    return _READERS[detect_format(data, source)](data, source, gpus, decode_gpus)


def ingest_file(path: Path, *, gpus: int | None = None, decode_gpus: int | None = None) -> Ingested:
    """One result file. `gpus`/`decode_gpus` are needed for raw bench files (they don't record them);
    InferenceX files carry their own."""
    docs = read_records(Path(path))
    if len(docs) > 1:
        raise ResultError(f"{path}: holds {len(docs)} results (JSONL): ingest_dir reads each of them")
    return ingest_record(docs[0][0], docs[0][1], gpus, decode_gpus)


def ingest_dir(path: Path, *, gpus: int | None = None, decode_gpus: int | None = None) -> list[Ingested]:
    """Every *.json / *.jsonl result in a folder (not recursive), sorted by concurrency. Strict: one bad
    file raises, so a failed level never silently drops out of a sweep."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    if not files:
        raise ResultError(f"{path}: no *.json or *.jsonl result files")
    got = [ingest_record(src, d, gpus, decode_gpus) for f in files for src, d in read_records(f)]
    return sorted(got, key=lambda r: (r.concurrency, r.level.source))
