"""Engine metrics around one level: what explains a number.

Each role's Prometheus endpoint is read before and after the level (counters become deltas) and
sampled while it runs (gauges become mean and max). vLLM's and SGLang's names under one set of keys; an
engine without them simply records fewer keys.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Self

import httpx

# metric sample name -> our key; counters are differenced over the level.
COUNTERS = {
    "vllm:spec_decode_num_draft_tokens_total": "spec_draft_tokens",
    "vllm:spec_decode_num_accepted_tokens_total": "spec_accepted_tokens",
    "vllm:spec_decode_num_drafts_total": "spec_drafts",
    "vllm:num_preemptions_total": "preemptions",
    "vllm:request_success_total": "requests_finished",
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:nixl_xfer_time_seconds_count": "kv_transfers",
    "vllm:nixl_bytes_transferred_sum": "kv_transfer_bytes",
    "vllm:nixl_num_failed_transfers_total": "kv_transfer_failures",
    # Per finished request, decode time / output tokens, stamped by the engine core (not the HTTP
    # front end), so a CPU-starved front end or client cannot distort it.
    "vllm:request_time_per_output_token_seconds_sum": "tpot_sum_s",
    "vllm:request_time_per_output_token_seconds_count": "tpot_count",
    # SGLang 0.5.23 (observability/metrics_collector.py): transfers counted on the prefill side.
    "sglang:kv_transfer_latency_ms_count": "kv_transfers",
    "sglang:num_transfer_failed_reqs_total": "kv_transfer_failures",
    "sglang:spec_verify_calls_total": "spec_verifies",
}
GAUGES = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
    # SGLang's gauges are written every --decode-log-interval decode steps (default 40), not per request.
    "sglang:token_usage": "kv_cache_usage",
    "sglang:num_running_reqs": "requests_running",
    "sglang:num_queue_reqs": "requests_waiting",
    "sglang:spec_accept_rate": "spec_accept_rate",
}


def parse(text: str) -> dict[str, float]:
    """Known samples summed over their labels (engines label by model, engine index, reason...)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in COUNTERS or s.name in GAUGES:
                out[s.name] = out.get(s.name, 0.0) + float(s.value)
    return out


def _cpu_times() -> list[int] | None:
    """The aggregate line of /proc/stat (user nice system idle iowait irq softirq steal ...); None off Linux."""
    try:
        with open("/proc/stat") as fh:
            return [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def _host(before: list[int] | None, after: list[int] | None) -> dict[str, float]:
    """Share of this machine's CPU time that was busy, and stolen by the hypervisor, during the level:
    a VM whose neighbours take its cores runs everything slower, and that explains a slow level."""
    if not before or not after or len(before) < 8:
        return {}
    delta = [a - b for a, b in zip(after, before, strict=False)]
    total = sum(delta[:8])
    if total <= 0:
        return {}
    return {"cpu_busy_pct": 100.0 * (total - delta[3] - delta[4]) / total, "cpu_steal_pct": 100.0 * delta[7] / total}


def speed_probe_ms(repeats: int = 5) -> float | None:
    """Median milliseconds of a fixed pure-Python loop, run on each core in turn (the engine's cores
    are idle between levels). On a VM whose speed drifts by tens of percent for minutes at a time this
    is recorded beside each level, so a calibration can test whether dividing by it cancels the drift."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    times: list[float] = []
    try:
        for core in sorted(allowed)[:4]:
            os.sched_setaffinity(0, {core})
            for _ in range(repeats):
                t0 = time.perf_counter()
                acc = 0
                for i in range(20_000):  # ~2 ms: interpreter-bound, like the engine's scheduler and front end
                    acc += i * i % 7
                times.append(1000.0 * (time.perf_counter() - t0))
    except OSError:
        return None
    finally:
        os.sched_setaffinity(0, allowed)
    return statistics.median(times)


def _read(client: httpx.Client, url: str) -> dict[str, float] | None:
    try:
        r = client.get(f"{url}/metrics", timeout=5.0)
        return parse(r.text) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None  # metrics explain numbers; they never fail a measurement


class Scraper:
    """`with Scraper({"server": url}) as s: ...` then `s.result`: role -> key -> value."""

    def __init__(self, roles: Mapping[str, str], interval_s: float = 0.5) -> None:
        self.roles = dict(roles)
        self.interval_s = interval_s
        self.result: dict[str, dict[str, float]] = {}
        self._client = httpx.Client()
        self._before: dict[str, dict[str, float] | None] = {}
        self._gauges: dict[str, dict[str, list[float]]] = {r: {} for r in self.roles}
        self._cpu: list[int] | None = None
        self._probe: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            for role, url in self.roles.items():
                now = _read(self._client, url)
                for name, key in GAUGES.items():
                    if now and name in now:
                        self._gauges[role].setdefault(key, []).append(now[name])

    def __enter__(self) -> Self:
        self._probe = speed_probe_ms()
        self._cpu = _cpu_times()
        self._before = {role: _read(self._client, url) for role, url in self.roles.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for role, url in self.roles.items():
            before, after = self._before.get(role), _read(self._client, url)
            got: dict[str, float] = {}
            if before is not None and after is not None:
                for name, key in COUNTERS.items():
                    if name in after:
                        got[key] = after[name] - before.get(name, 0.0)
            for key, values in self._gauges[role].items():
                got[f"{key}_mean"] = sum(values) / len(values)
                got[f"{key}_max"] = max(values)
            if got.get("tpot_count", 0.0) > 0:
                got["server_mean_tpot_ms"] = 1000.0 * got["tpot_sum_s"] / got["tpot_count"]
            drafted = got.get("spec_draft_tokens", 0.0)
            if drafted > 0:
                got["spec_acceptance_rate"] = got.get("spec_accepted_tokens", 0.0) / drafted
            elif got.get("spec_accept_rate_mean", 0.0) > 0:  # SGLang reports the rate itself (a gauge)
                got["spec_acceptance_rate"] = got["spec_accept_rate_mean"]
            if got:
                self.result[role] = got
        host = _host(self._cpu, _cpu_times())
        probe = speed_probe_ms()
        if self._probe is not None and probe is not None:
            host["probe_ms"] = (self._probe + probe) / 2
        if host:
            self.result["host"] = host
        self._client.close()


def pooled_acceptance(levels: Iterable[Mapping[str, Mapping[str, float]]]) -> float | None:
    """Accepted / drafted tokens pooled over levels (each a role -> metrics map); None without drafts."""
    got = [r for m in levels if (r := acceptance_rate(m)) is not None]
    drafted = sum(d for _, d in got)
    return sum(a for a, _ in got) / drafted if drafted else None


def acceptance_rate(metrics: Mapping[str, Mapping[str, float]]) -> tuple[float, float] | None:
    """(accepted, drafted) tokens over every role of a level, None without speculative decoding."""
    drafted = sum(m.get("spec_draft_tokens", 0.0) for m in metrics.values())
    if drafted <= 0:
        return None
    return sum(m.get("spec_accepted_tokens", 0.0) for m in metrics.values()), drafted
