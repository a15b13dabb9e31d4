"""What a measurement is on disk: a concurrency sweep of one deployment, level by level."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from pytest_infer.matrix import Workload


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

    @classmethod
    def from_bench(cls, data: dict[str, Any], gpus: int, decode_gpus: int, source: str) -> Level:
        """From `vllm bench serve --save-result` JSON; refuses results that measured nothing."""

        def field(name: str) -> Any:
            if name not in data:
                raise ResultError(f"{source}: field {name!r} missing")
            return data[name]

        completed = int(field("completed"))
        if completed == 0:
            raise ResultError(f"{source}: field 'completed' is 0: every request failed, nothing was measured")
        tpot = float(field("median_tpot_ms"))
        if tpot <= 0:
            raise ResultError(f"{source}: field 'median_tpot_ms' is {tpot}: no decode steps measured")
        total, out = float(field("total_token_throughput")), float(field("output_throughput"))
        return cls(
            concurrency=int(data.get("max_concurrency") or 0),
            num_prompts=int(data.get("num_prompts") or completed),
            completed=completed,
            failed=int(data.get("failed", 0) or 0),
            duration_s=float(field("duration")),
            output_throughput=out,
            total_throughput=total,
            per_gpu_throughput=total / gpus,
            per_gpu_output_throughput=out / gpus,
            per_decode_gpu_output_throughput=out / max(decode_gpus, 1),
            interactivity=1000.0 / tpot,
            median_ttft_ms=float(field("median_ttft_ms")),
            median_tpot_ms=tpot,
            median_e2el_ms=float(data.get("median_e2el_ms", 0.0)),
            p99_ttft_ms=float(data.get("p99_ttft_ms", 0.0)),
            p99_tpot_ms=float(data.get("p99_tpot_ms", 0.0)),
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

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.completed >= self.num_prompts


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
