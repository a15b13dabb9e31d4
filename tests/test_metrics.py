"""Engine metrics around a level: Prometheus text parsed, counters differenced, gauges sampled, and the
engine core's TPOT turned into interactivity when the workload asks for it."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from pytest_infer.measure.metrics import Scraper, acceptance_rate, parse
from pytest_infer.store.records import Level, ResultError

# The shape vLLM 0.32 writes (labels per engine and model; histograms as _sum/_count/_bucket).
VLLM_TEXT = """# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{{engine="0",model_name="m"}} {drafted}
vllm:spec_decode_num_draft_tokens_total{{engine="1",model_name="m"}} {drafted}
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{{engine="0",model_name="m"}} {accepted}
vllm:spec_decode_num_accepted_tokens_total{{engine="1",model_name="m"}} {accepted}
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",model_name="m"}} {preempted}
# TYPE vllm:request_time_per_output_token_seconds histogram
vllm:request_time_per_output_token_seconds_bucket{{engine="0",le="0.01",model_name="m"}} {finished}
vllm:request_time_per_output_token_seconds_count{{engine="0",model_name="m"}} {finished}
vllm:request_time_per_output_token_seconds_sum{{engine="0",model_name="m"}} {tpot_sum}
"""


def test_parse_sums_labels_and_keeps_known_samples() -> None:
    got = parse(VLLM_TEXT.format(drafted=10, accepted=4, kv=0.25, preempted=1, finished=3, tpot_sum=0.03))
    assert got["vllm:spec_decode_num_draft_tokens_total"] == 20  # two engines
    assert got["vllm:spec_decode_num_accepted_tokens_total"] == 8
    assert got["vllm:kv_cache_usage_perc"] == 0.25
    assert got["vllm:request_time_per_output_token_seconds_count"] == 3
    assert not any("bucket" in k for k in got)


class _Engine(http.server.BaseHTTPRequestHandler):
    """Counters that grow on every scrape, like an engine under load."""

    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        n = type(self).calls
        body = VLLM_TEXT.format(drafted=100 * n, accepted=60 * n, kv=0.1 * (n % 3), preempted=n,
                                finished=10 * n, tpot_sum=0.05 * n).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def engine_url() -> Iterator[str]:
    _Engine.calls = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_scraper_differences_counters_and_samples_gauges(engine_url: str) -> None:
    import time

    with Scraper({"decode": engine_url, "dead": "http://127.0.0.1:9"}, interval_s=0.05) as s:
        time.sleep(0.3)
    calls = _Engine.calls
    m = s.result["decode"]
    steps = calls - 1  # counters: last scrape minus first
    assert m["spec_draft_tokens"] == 200 * steps and m["spec_accepted_tokens"] == 120 * steps
    assert m["spec_acceptance_rate"] == pytest.approx(0.6)
    assert m["preemptions"] == steps
    assert m["server_mean_tpot_ms"] == pytest.approx(1000 * 0.05 / 10)
    assert 0 <= m["kv_cache_usage_mean"] <= m["kv_cache_usage_max"] <= 0.2 + 1e-9
    assert "dead" not in s.result  # an unreachable role records nothing and fails nothing
    host = s.result["host"]  # this machine's CPU during the level (Linux /proc/stat)
    assert 0 <= host["cpu_steal_pct"] <= host["cpu_busy_pct"] + 100 and 0 <= host["cpu_busy_pct"] <= 100
    assert acceptance_rate(s.result) == (120 * steps, 200 * steps)


def _level(interactivity: float) -> Level:
    return Level(concurrency=4, num_prompts=8, completed=8, failed=0, duration_s=1.0, output_throughput=100.0,
                 total_throughput=300.0, per_gpu_throughput=300.0, per_gpu_output_throughput=100.0,
                 per_decode_gpu_output_throughput=100.0, interactivity=interactivity, median_ttft_ms=10.0,
                 median_tpot_ms=1000 / interactivity, median_e2el_ms=100.0, p99_ttft_ms=20.0, p99_tpot_ms=20.0)


def test_server_side_interactivity_uses_the_slowest_decoding_role_and_keeps_the_client_value() -> None:
    lv = _level(40000.0)  # a burst: the client saw every token at once
    lv.use_server_interactivity({"prefill": {"server_mean_tpot_ms": 1.0},
                                 "decode": {"server_mean_tpot_ms": 8.0},
                                 "decode-node1": {"server_mean_tpot_ms": 10.0}}, "x.json")
    assert lv.interactivity == pytest.approx(100.0) and lv.client_interactivity == 40000.0
    assert lv.interactivity_source == "server"
    with pytest.raises(ResultError, match=r"x\.json: interactivity_from: server, but no role exported"):
        _level(50.0).use_server_interactivity({"server": {"requests_finished": 3}}, "x.json")


def test_sglang_families_land_on_the_same_keys() -> None:
    """The names SGLang 0.5.23 exports (observability/metrics_collector.py; written here in that shape, not
    recorded: no SGLang runs on this machine), parsed into the keys the reports read for vLLM."""
    text = (
        "# TYPE sglang:token_usage gauge\n"
        'sglang:token_usage{model_name="m",engine_type="decode",tp_rank="0",dp_rank="0"} 0.25\n'
        "# TYPE sglang:num_running_reqs gauge\n"
        'sglang:num_running_reqs{model_name="m",engine_type="decode",tp_rank="0",dp_rank="0"} 12\n'
        "# TYPE sglang:spec_accept_rate gauge\n"
        'sglang:spec_accept_rate{model_name="m",engine_type="decode",tp_rank="0",dp_rank="0"} 0.7\n'
        "# TYPE sglang:kv_transfer_latency_ms histogram\n"
        'sglang:kv_transfer_latency_ms_bucket{engine_type="prefill",le="+Inf"} 40\n'
        'sglang:kv_transfer_latency_ms_count{engine_type="prefill"} 40\n'
        'sglang:kv_transfer_latency_ms_sum{engine_type="prefill"} 812.5\n'
        "# TYPE sglang:num_transfer_failed_reqs counter\n"
        'sglang:num_transfer_failed_reqs_total{engine_type="prefill"} 0\n')
    got = parse(text)
    assert got == {"sglang:token_usage": 0.25, "sglang:num_running_reqs": 12.0, "sglang:spec_accept_rate": 0.7,
                   "sglang:kv_transfer_latency_ms_count": 40.0, "sglang:num_transfer_failed_reqs_total": 0.0}
