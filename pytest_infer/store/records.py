"""What a measurement is on disk: a concurrency sweep of one deployment, level by level."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from pytest_infer.matrix import Workload
from pytest_infer.measure.evidence import Evidence


class ResultError(ValueError):
    """A benchmark result that cannot be used: names the file and the field."""


class Level(BaseModel):
    """One concurrency level, in `vllm bench serve` terms, plus per-GPU normalisation."""

    concurrency: int
    num_prompts: int
    completed: int
    failed: int
    duration_s: float
    output_throughput: float  # tok/s, whole deployment
    total_throughput: float  # input + output tok/s, whole deployment
    per_gpu_throughput: float  # total / all GPUs (prefill + decode for disagg, as the field counts)
    per_gpu_output_throughput: float
    per_decode_gpu_output_throughput: float
    interactivity: float  # tok/s/user = 1000 / median TPOT (ms)
    median_ttft_ms: float
    median_tpot_ms: float
    median_e2el_ms: float
    p99_ttft_ms: float
    p99_tpot_ms: float
    source: str = ""  # raw result file
    repeat: int = 0  # which sweep of the deployment this level belongs to
    # Interleaved measurement (Workload.interleave): the round this level was measured in. Deployments
    # measured level by level in alternation share a round per repeat, so their curves of one round
    # saw the same machine and can be compared pairwise; "" when measured alone.
    block: str = ""
    interactivity_source: str = "client"  # or "server": see Workload.interactivity_from
    client_interactivity: float | None = None  # kept when interactivity comes from the server
    # Engine metrics scraped around the level, per role: what explains the numbers (spec-decode
    # acceptance, KV-cache usage, preemptions, KV transfers).
    metrics: dict[str, dict[str, float]] = {}
    # Device power over the level's measured phase (its last duration_s seconds), summed over the
    # deployment's devices (measure/power.py): mean watts and joules (= power_w x duration_s). None where
    # the devices report none (the measurement's power_note says why).
    power_w: float | None = None
    energy_j: float | None = None
    # What the level's requests produced and were asked for: a level counts only when every request
    # completed with its expected output (ignore_eos) and tokens came back (see `problems`).
    output_tokens: int | None = None  # generated over the level; None: the file does not say
    expected_output_tokens: int | None = None  # the workload's lengths x completed; None: unknown
    min_output_tokens: int | None = None  # the workload's shortest request x completed (range ratio)
    # Requests the client counted as completed that returned fewer tokens than the workload's shortest
    # (vllm bench serve counts a request once its headers arrived, even if no token followed).
    short_requests: int | None = None
    request_rate: float | None = None  # requests/s of a request-rate level (inf: all at once)
    # Replayed data that declares the failed share it tolerates (InferenceX agentic runs): within it a
    # level with failures is inconclusive, not failed.
    failure_threshold: float | None = None

    @classmethod
    def from_bench(cls, data: dict[str, Any], gpus: int, decode_gpus: int, source: str) -> Level:
        """From `vllm bench serve --save-result` JSON. A run where every request failed is a level with
        nothing measured (zero throughput, `problems` says why), never an error and never a slow pass."""

        def field(name: str) -> Any:
            if name not in data:
                raise ResultError(f"{source}: field {name!r} missing")
            return data[name]

        completed = int(field("completed"))
        failed = int(data.get("failed", 0) or 0)
        prompts = int(data.get("num_prompts") or completed + failed)
        tpot = float(data.get("median_tpot_ms") or 0.0) if completed == 0 else float(field("median_tpot_ms"))
        if completed and tpot <= 0:
            raise ResultError(f"{source}: field 'median_tpot_ms' is {tpot}: no decode steps measured")
        total = float(data.get("total_token_throughput") or 0.0) if completed == 0 else \
            float(field("total_token_throughput"))
        out = float(data.get("output_throughput") or 0.0) if completed == 0 else float(field("output_throughput"))
        out_tokens = data.get("total_output_tokens")
        rate = data.get("request_rate")
        return cls(
            concurrency=int(data.get("max_concurrency") or 0),
            num_prompts=prompts,
            completed=completed,
            failed=max(failed, prompts - completed),
            duration_s=float(data.get("duration") or 0.0) if completed == 0 else float(field("duration")),
            output_throughput=out,
            total_throughput=total,
            per_gpu_throughput=total / gpus,
            per_gpu_output_throughput=out / gpus,
            per_decode_gpu_output_throughput=out / max(decode_gpus, 1),
            interactivity=1000.0 / tpot if tpot > 0 else 0.0,
            median_ttft_ms=float(data.get("median_ttft_ms") or 0.0) if completed == 0 else
            float(field("median_ttft_ms")),
            median_tpot_ms=tpot,
            median_e2el_ms=float(data.get("median_e2el_ms", 0.0) or 0.0),
            p99_ttft_ms=float(data.get("p99_ttft_ms", 0.0) or 0.0),
            p99_tpot_ms=float(data.get("p99_tpot_ms", 0.0) or 0.0),
            output_tokens=None if out_tokens is None else int(out_tokens),
            request_rate=None if rate is None else float(rate),
            source=source,
        )

    def use_server_interactivity(self, metrics: dict[str, dict[str, float]], source: str) -> None:
        """Interactivity from the engine core's mean TPOT of the decoding role(s)."""
        tpots = [m["server_mean_tpot_ms"] for role, m in metrics.items()
                 if m.get("server_mean_tpot_ms") and not role.startswith("prefill")]
        if not tpots:
            raise ResultError(f"{source}: interactivity_from: server, but no role exported "
                              "vllm:request_time_per_output_token_seconds during the level")
        self.client_interactivity = self.interactivity
        self.interactivity = 1000.0 / max(tpots)  # the slowest decoding role sets the pace
        self.interactivity_source = "server"

    def expect_at_least(self, data: dict[str, Any], shortest: int) -> None:
        """The workload's floor on output tokens per request, checked on the level's totals and, when the
        file lists them (--save-detailed), on every request the client counted as completed."""
        self.min_output_tokens = self.completed * shortest
        lens, errors = data.get("output_lens"), data.get("errors")
        if isinstance(lens, list):
            done = [n for i, n in enumerate(lens)
                    if not (isinstance(errors, list) and i < len(errors) and errors[i])]
            self.short_requests = sum(1 for n in done if int(n or 0) < shortest)

    def problems(self) -> list[str]:
        """Why this level does not count (empty: it does): failed or missing requests, no tokens, fewer
        tokens than the workload asked for. Each names the level, the counts and the file."""
        where = f"concurrency {self.concurrency}" if self.concurrency else (
            f"request rate {self.request_rate:g}/s" if self.request_rate is not None else "a level")
        src = f" ({Path(self.source).name})" if self.source else ""
        out: list[str] = []
        if self.completed == 0 and self.num_prompts == 0 and self.output_throughput > 0:
            return out  # a format that records no request counts (its warnings say so)
        if self.completed == 0:
            out.append(f"{where}: every request failed ({self.failed} failed, 0 completed){src}")
            return out
        if self.failed or self.completed < self.num_prompts:
            out.append(f"{where}: {self.failed} failed and {self.completed} completed of {self.num_prompts} "
                       f"requests{src}")
        if self.output_tokens is not None and self.output_tokens <= 0:
            out.append(f"{where}: {self.completed} requests completed but 0 output tokens came back{src}")
        elif self.short_requests:
            out.append(f"{where}: {self.short_requests} of {self.completed} completed requests returned fewer output "
                       f"tokens than the workload asks for (ignore_eos){src}")
        elif self.output_tokens is not None:
            floor = self.expected_output_tokens if self.expected_output_tokens is not None else self.min_output_tokens
            if floor is not None and self.output_tokens < floor:
                what = "expected" if self.expected_output_tokens is not None else "at least"
                out.append(f"{where}: {self.output_tokens} output tokens, {what} {floor} for {self.completed} "
                           f"requests with ignore_eos (requests ended early){src}")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    @property
    def tolerated(self) -> bool:
        """Failures within the failure threshold the data declares (replayed agentic runs)."""
        if self.failure_threshold is None or self.completed == 0 or self.num_prompts == 0:
            return False
        return self.failed / self.num_prompts <= self.failure_threshold


class Record(BaseModel):
    """What a store keeps per deployment (one JSON file named by stack id and key), and where it ran."""

    key: str
    stack: str
    engine: str
    engine_version: str
    gpu: str
    model: str


class Measurement(Record):
    gpus: int
    decode_gpus: int
    workload: Workload
    argv: dict[str, list[str]]  # role -> argv, for the record
    levels: list[Level] = []
    status: Literal["running", "ok", "failed"] = "running"
    error: str = ""  # why it failed, with the server log tail
    launch_s: float = 0.0  # time to healthy
    run_id: str = ""  # the pytest session that measured it
    model_fingerprint: str = ""  # the built model's hash (or the model's name): a baseline's environment
    device: str = ""  # what it ran on (launch/gpus.device_fingerprint): a baseline's environment
    # What may flatter the numbers without failing them (replayed results: requests that failed inside
    # a level, failures a format cannot show). Shown with the verdict.
    warnings: list[str] = []
    date: str = ""  # when it was measured (UTC day, or the replayed files' own dates)
    # What the deployment reported about itself against what the stack claims (measure/evidence.py);
    # None: not read back (stored before, replayed, or an engine that declares no evidence).
    evidence: Evidence | None = None
    # How the levels' power was read (tool and devices, measure/power.py), or why they carry none; "": not
    # sampled (stored before, replayed).
    power_note: str = ""

    def level(self, concurrency: int, repeat: int = 0) -> Level | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency and lv.repeat == repeat), None)

    def sweeps(self) -> list[list[Level]]:
        """Levels grouped by repeat, in repeat order: one curve each."""
        by: dict[int, list[Level]] = {}
        for lv in self.levels:
            by.setdefault(lv.repeat, []).append(lv)
        return [by[r] for r in sorted(by)]

    def complete(self, concurrency: list[int], repeats: int) -> bool:
        return all(self.level(c, r) for r in range(repeats) for c in concurrency)
