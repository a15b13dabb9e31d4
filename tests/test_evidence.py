"""The stack is what it claims (measure/evidence.py), on what real vLLM 0.32 CPU servers reported about
themselves: their start-up lines (non-default args, engine config) and their /metrics after traffic, recorded
in tests/data/evidence (cut to the lines and families read; model paths shortened). No engine needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_infer.matrix import Matrix, MatrixError, default_root
from pytest_infer.measure.evidence import (
    FAILED,
    Evidence,
    RoleReport,
    holds,
    judge,
    level_counters,
    parse_args_line,
    parse_config_line,
    role_report,
)
from pytest_infer.report.markdown import applied_table
from pytest_infer.report.rows import Row, StackRow
from pytest_infer.store.records import Measurement

DATA = Path(__file__).resolve().parent / "data" / "evidence"
EVIDENCE = Matrix(default_root()).engines["vllm"].evidence


def _role(name: str, log: str, metrics: str | None = None, counters: dict[str, float] | None = None) -> RoleReport:
    text = (DATA / metrics).read_text() if metrics else None
    return role_report(name, (DATA / log).read_text(), EVIDENCE, text, counters)


def _judge(opts: tuple[str, ...], *roles: RoleReport) -> Evidence:
    return judge(EVIDENCE, "cpu", opts, list(roles))


def test_the_recorded_lines_parse_as_vllm_logged_them() -> None:
    line = next(ln for ln in (DATA / "disagg_mtp_decode.log").read_text().splitlines() if "non-default args" in ln)
    args = parse_args_line(line, EVIDENCE.args_line)
    assert args["speculative_config"] == "{'method': 'mtp', 'num_speculative_tokens': 1}"
    assert args["max_model_len"] == "512" and args["served_model_name"] == "['tiny-glm4moe-mtp']"
    # Not a literal: vLLM logs the connector's config object, commas and nested dict inside.
    assert args["kv_transfer_config"].startswith("KVTransferConfig(kv_connector='ExampleConnector'")
    assert "kv_load_failure_policy='fail')" in args["kv_transfer_config"]
    config_line = next(ln for ln in (DATA / "mtp_kv_server.log").read_text().splitlines() if " with config: " in ln)
    config = parse_config_line(config_line, EVIDENCE.config_line)
    assert config["speculative_config"].startswith("SpeculativeConfig(method='mtp'")
    assert config["quantization"] == "None" and config["data_parallel_size"] == "1"
    assert config["model"] == "/models/tiny-glm4moe-mtp" and config["kv_cache_dtype"] == "auto"


@pytest.mark.parametrize(("condition", "value", "expected"), [
    ("*", "{'method': 'mtp'}", True), ("*", "None", False), ("*", None, False), ("*", "False", False),
    (">1", "2", True), (">1", "1", False), (">1", "two", False),
    ("*fp4*", "modelopt_fp4", True), ("*fp4*|quark", "quark", True), ("*fp4*|quark", "fp8", False),
])
def test_conditions(condition: str, value: str | None, expected: bool) -> None:
    assert holds(condition, value) is expected


def test_mtp_with_its_speculative_config_and_drafts_passes() -> None:
    ev = _judge(("mtp", "disagg"), _role("server", "mtp_kv_server.log", "mtp_kv_server.metrics"))
    assert ev.ok, ev.contradictions
    assert ev.seen["mtp"].startswith("speculative_config {'method': 'mtp', 'num_speculative_tokens': 1} on server")
    assert "39 spec_decode_num_drafts on server" in ev.seen["mtp"]
    assert "kv_transfer_config KVTransferConfig(kv_connector='ExampleConnector'" in ev.seen["disagg"]
    assert "24 external_prefix_cache_queries on server" in ev.seen["disagg"]
    assert "mtp: speculative_config" in ev.summary()


def test_mtp_without_its_speculative_config_fails_naming_both_sides() -> None:
    """The flag silently dropped: the server ran without speculation under the mtp label."""
    ev = _judge(("mtp",), _role("server", "base_server.log", "base_server.metrics"))
    assert ev.contradictions == [
        "claims mtp: no speculative_config in server's non-default args, no speculative_config "
        "\"*method='mtp'*\" in server's engine config (speculative_config=None), "
        "vllm:spec_decode_num_drafts_total never counted on any role (server: absent)"]
    failure = ev.failure()
    assert failure.startswith(f"{FAILED}: claims mtp: no speculative_config")
    # ... with the log lines that showed it
    assert "server.log: (APIServer pid=8094) INFO 12-02 13:06:02 [api_utils.py:286] non-default args: {" in failure
    assert "server.log engine config: quantization=None, speculative_config=None" in failure


def test_drafts_counted_around_the_levels_are_evidence_too() -> None:
    """A sweep's levels (Level.metrics, our keys) count as /metrics seen after traffic."""
    counters = level_counters([{"server": {"spec_drafts": 800.0, "spec_draft_tokens": 800.0}},
                               {"server": {"spec_drafts": 833.0}, "host": {"cpu_busy_pct": 90.0}}])
    assert counters == {"server": {"vllm:spec_decode_num_drafts_total": 1633.0,
                                   "vllm:spec_decode_num_draft_tokens_total": 800.0}}
    ev = _judge(("mtp",), _role("server", "mtp_kv_server.log", None, counters["server"]))
    assert not any(c.startswith("claims mtp") for c in ev.contradictions)
    assert "1633 spec_decode_num_drafts on server" in ev.seen["mtp"]


def test_base_with_a_speculative_config_fails() -> None:
    ev = _judge((), _role("server", "mtp_kv_server.log", "mtp_kv_server.metrics"))
    claims = {c.split(":")[0] for c in ev.contradictions}
    assert claims == {"does not claim mtp", "does not claim disagg"}
    mtp = next(c for c in ev.contradictions if c.startswith("does not claim mtp"))
    assert "speculative_config {'method': 'mtp', 'num_speculative_tokens': 1} in server's non-default args" in mtp
    assert "vllm:spec_decode_num_drafts_total 39 on server" in mtp


def test_base_as_launched_passes() -> None:
    ev = _judge((), _role("server", "base_server.log", "base_server.metrics"))
    assert ev.ok and ev.seen == {"base": "no sign of mtp, disagg, wideep, fp4 on server", "roles": "server 1 rank(s)"}


def test_disagg_without_a_kv_transfer_config_fails() -> None:
    """Prefill and decode servers launched, but without their connector: nothing moves the KV cache."""
    ev = _judge(("disagg",), _role("prefill", "base_server.log", "base_server.metrics"),
                _role("decode", "base_server.log", "base_server.metrics"))
    assert ev.contradictions == [
        "claims disagg: no kv_transfer_config in prefill's non-default args, no kv_transfer_config in decode's "
        "non-default args, vllm:external_prefix_cache_queries_total never counted on any role (prefill: 0, decode: 0)"]


def test_disagg_and_mtp_on_prefill_and_decode_pass() -> None:
    counters = {"vllm:external_prefix_cache_queries_total": 6.0, "vllm:spec_decode_num_drafts_total": 4.0}
    ev = _judge(("disagg", "mtp"), _role("prefill", "disagg_mtp_prefill.log", None, counters),
                _role("decode", "disagg_mtp_decode.log", None, counters))
    assert ev.ok, ev.contradictions
    assert "on prefill, decode" in ev.seen["mtp"] and "12 external_prefix_cache_queries on prefill, decode" \
        in ev.seen["disagg"]


def test_mtp_on_one_role_only_fails() -> None:
    """Every serving role must run it: mismatched speculative configs break P/D."""
    ev = _judge(("disagg", "mtp"), _role("prefill", "disagg_mtp_prefill.log", "mtp_kv_server.metrics"),
                _role("decode", "base_server.log", "base_server.metrics"))
    mtp = next(c for c in ev.contradictions if c.startswith("claims mtp"))
    assert "no speculative_config in decode's non-default args" in mtp and "prefill's" not in mtp


def test_wideep_shows_its_data_parallel_ranks() -> None:
    ev = _judge(("wideep",), _role("server", "wideep_server.log", "wideep_server.metrics"))
    assert ev.ok, ev.contradictions
    assert ev.seen["wideep"] == ("enable_expert_parallel True on server; data_parallel_size 2 on server; "
                                 "2 engine rank(s) (engine) on server's /metrics")
    dropped = _judge(("wideep",), _role("server", "base_server.log", "base_server.metrics"))
    assert dropped.contradictions == [
        "claims wideep: no enable_expert_parallel in server's non-default args, no data_parallel_size>1 in server's "
        "non-default args, 1 engine rank(s) (engine) on server's /metrics, not >1"]
    unclaimed = _judge((), _role("server", "wideep_server.log", "wideep_server.metrics"))
    assert unclaimed.contradictions[0].startswith("does not claim wideep: enable_expert_parallel True in server's")


def test_a_role_that_logged_nothing_cannot_show_a_claim() -> None:
    ev = judge(EVIDENCE, "cpu", ("mtp",), [role_report("server", "", EVIDENCE, None)])
    assert ev.contradictions == [
        "claims mtp: server logged no 'non-default args:' line, server logged no 'with config:' line, "
        "vllm:spec_decode_num_drafts_total never counted on any role (server: no /metrics)"]


def test_an_engine_that_declares_no_evidence_is_not_judged() -> None:
    matrix = Matrix(default_root())
    quiet = matrix.engines["vllm"].evidence.model_copy(update={"optimizations": {}})
    ev = judge(quiet, "cpu", ("mtp",), [_role("server", "base_server.log")])
    assert ev.ok and ev.seen["mtp"] == "no evidence declared for it in the engine file"


def test_measurements_stored_before_evidence_still_load() -> None:
    workload = Matrix(default_root()).workload("cpu")
    old = {"key": "k", "stack": "cpu-vllm-mtp", "engine": "vllm", "engine_version": "0.32.0", "gpu": "cpu",
           "model": "tiny", "gpus": 1, "decode_gpus": 1, "workload": workload.model_dump(), "argv": {}}
    assert Measurement.model_validate(old).evidence is None
    ev = Evidence(seen={"mtp": "x"}, contradictions=[])
    again = Measurement.model_validate_json(Measurement.model_validate({**old, "evidence": ev}).model_dump_json())
    assert again.evidence == ev


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('      ranks: ">1"', '      ranks: ">two"', "evidence.optimizations.wideep.ranks"),
    ("    wideep:\n      args:", "    widep:\n      args:", "key evidence.optimizations.widep: not in optimizations"),
    ('  rank_label: engine\n', '', "evidence.optimizations.wideep.ranks needs evidence.rank_label"),
])
def test_a_bad_evidence_key_names_file_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    root = tmp_path / "m"
    shutil.copytree(default_root(), root)
    engine = root / "engines" / "vllm.yaml"
    text = engine.read_text()
    assert old in text
    engine.write_text(text.replace(old, new, 1))
    with pytest.raises(MatrixError, match=r"engines/vllm\.yaml") as err:
        Matrix(root)
    assert expected in str(err.value)


def test_the_applied_table_shows_evidence_and_contradictions() -> None:
    ok = _judge(("disagg", "mtp"), _role("server", "mtp_kv_server.log", "mtp_kv_server.metrics"))
    bad = _judge(("mtp",), _role("server", "base_server.log", "base_server.metrics"))
    rows = [Row("cpu-vllm-disagg+mtp", "passed", "", StackRow(stack="cpu-vllm-disagg+mtp", applied=ok.summary())),
            Row("cpu-vllm-mtp", "failed", bad.failure(), StackRow(stack="cpu-vllm-mtp", message=bad.failure())),
            Row("cpu-vllm-base", "passed", "", StackRow(stack="cpu-vllm-base"))]
    text = applied_table(rows)
    assert text.startswith("\n## Applied configuration\n")
    assert "| `cpu-vllm-disagg+mtp` | mtp: speculative_config {'method': 'mtp', 'num_speculative_tokens': 1} on " \
        "server; speculative_config SpeculativeConfig(" in text
    assert "| `cpu-vllm-mtp`        | CONTRADICTED: claims mtp: no speculative_config in server's non-default args" \
        in text
    assert "cpu-vllm-base" not in text  # nothing read back: no line
    assert applied_table(rows[2:]) == ""


def _sglang_role(name: str, mode: str, spec: str | None, ranks: int) -> RoleReport:
    """A role as SGLang 0.5.23 reports itself, in the shape its code writes (engine.py: the resolved dict;
    observability/metrics_collector.py: the families). Written here, not recorded: no SGLang runs here."""
    args = {"model_path": "/m", "tp_size": 8, "dp_size": ranks, "ep_size": ranks, "disaggregation_mode": mode,
            "speculative_algorithm": spec, "quantization": "modelopt_fp4"}
    log = f"[2026-12-03 08:00:00] server_args={args!r}\n"
    metrics = "".join(
        f'sglang:spec_verify_calls_total{{model_name="m",engine_type="{mode}",tp_rank="{r}",dp_rank="{r}"}} '
        f'{12.0 if spec else 0.0}\n'
        + (f'sglang:kv_transfer_bootstrap_ms_count{{engine_type="{mode}",tp_rank="{r}",dp_rank="{r}"}} 30.0\n'
           if mode != "null" else "")
        for r in range(ranks))
    return role_report(name, log, SGLANG, metrics)


SGLANG = Matrix(default_root()).engines["sglang"].evidence


def test_sglang_roles_show_what_their_stack_claims_and_a_dropped_flag_is_caught() -> None:
    roles = [_sglang_role("prefill", "prefill", "EAGLE", 8), _sglang_role("decode", "decode", "EAGLE", 8)]
    ev = judge(SGLANG, "nvidia", ("fp4", "disagg", "wideep", "mtp"), roles)
    assert ev.ok, ev.contradictions
    assert "speculative_algorithm EAGLE on prefill, decode" in ev.seen["mtp"], ev.seen
    dropped = [_sglang_role("prefill", "prefill", None, 8), _sglang_role("decode", "decode", None, 8)]
    bad = judge(SGLANG, "nvidia", ("fp4", "disagg", "wideep", "mtp"), dropped)
    assert len(bad.contradictions) == 1 and bad.contradictions[0].startswith("claims mtp: "), bad.contradictions
    assert "no speculative_algorithm 'EAGLE*|NEXTN|STANDALONE' in prefill's server args" in bad.contradictions[0]
    assert "spec_verify_calls" in bad.contradictions[0], bad.contradictions
    one_rank = judge(SGLANG, "nvidia", ("fp4", "wideep"), [_sglang_role("server", "null", None, 1)])
    assert not one_rank.ok and "claims wideep" in one_rank.contradictions[0], one_rank.contradictions
