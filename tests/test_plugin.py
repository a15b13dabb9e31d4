"""The plugin's own behaviour, through pytester: options, collection, usage errors, plans, marks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

OPTS = ["fp4", "disagg", "wideep", "mtp"]


def test_collect_only_lists_every_mi355x_stack_fast(pytester: pytest.Pytester) -> None:
    t0 = time.monotonic()
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--collect-only", "-q")
    elapsed = time.monotonic() - t0
    ids = [ln.split("[")[1].rstrip("]") for ln in result.outlines if "test_composability[" in ln]
    assert len(ids) == 32, result.outlines  # 16 stacks on each engine that runs on mi355x (files in name order)
    assert ids[0] == "mi355x-sglang-base" and ids[15] == "mi355x-sglang-fp4+disagg+wideep+mtp"
    assert ids[16] == "mi355x-vllm-base" and ids[-1] == "mi355x-vllm-fp4+disagg+wideep+mtp"
    assert len(set(ids)) == 32
    # Deterministic: a second collection gives the same order (what xdist workers rely on).
    again = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--collect-only", "-q")
    assert [ln for ln in again.outlines if "[" in ln] == [ln for ln in result.outlines if "[" in ln]
    print(f"collect-only wall time: {elapsed:.2f} s")


@pytest.mark.parametrize(("args", "expected"), [
    (["--gpu", "h900"], "unknown GPU kind 'h900'; valid: mi250x, mi300x, mi325x, mi355x, h100"),
    (["--gpu", "cpu", "--suite", "speed"], "unknown suite 'speed'; valid: composability, conformance"),
    (["--gpu", "b200", "--engine", "trtllm"], "unknown engine 'trtllm' for b200; valid: sglang, vllm"),
    (["--gpu", "b200", "--stack", "fp4+eagle"], "unknown optimization 'eagle'"),
    (["--suite", "composability"], "need --gpu KIND"),
    (["--gpu", "cpu", "--infer-repeats", "1"], "--infer-repeats 1: at least 2"),
])
def test_bad_options_are_one_line_usage_errors(pytester: pytest.Pytester, args: list[str], expected: str) -> None:
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in result.errlines if ln.strip()]
    assert len(errors) == 1 and expected in errors[0], result.errlines
    assert "Traceback" not in result.stderr.str()


def _copy_matrices(dst: Path) -> Path:
    src = Path(__file__).resolve().parent.parent / "matrices"
    for f in src.rglob("*.yaml"):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.read_text())
    return dst


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    ("gpus.yaml", "fp4: true}", "fp4: maybe}", "gpus.yaml: key gpus.mi355x.fp4"),
    ("gpus.yaml", "gpus:", "gpus: [", "gpus.yaml: line"),
    ("engines/vllm.yaml", "  wideep:\n", "  wideepp:\n", "engines/vllm.yaml: key optimizations.wideepp"),
    ("models.yaml", "model: deepseek-r1-0528, tensor_parallel: 8}", "model: r2, tensor_parallel: 8}",
     "models.yaml: key defaults.mi300x.model"),
    ("workloads.yaml", "regression_tolerance: 0.50", "regression_tolerance: 0.30",
     "workloads.yaml: key workloads.cpu.regression_tolerance: a margin of 0.30 is inside the between-session"),
])
def test_broken_matrix_names_file_and_key(pytester: pytest.Pytester, file: str, old: str, new: str,
                                          expected: str) -> None:
    root = _copy_matrices(pytester.path / "m")
    path = root / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--infer-matrices", str(root), "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in result.errlines if ln.strip()]
    assert len(errors) == 1 and expected in errors[0], errors


def test_an_optimization_added_as_data_only_joins_the_space(pytester: pytest.Pytester) -> None:
    root = _copy_matrices(pytester.path / "m")
    (root / "optimizations.yaml").write_text((root / "optimizations.yaml").read_text() + (
        "  kvoffload:\n    summary: KV-cache offload to host memory\n"))
    engine = root / "engines" / "vllm.yaml"
    engine.write_text(engine.read_text().replace("\n# What vLLM can run", (
        "\n  kvoffload:\n    args: [--kv-offloading-size, '64', --kv-offloading-backend, native]\n"
        "\n# What vLLM can run")))
    sglang = root / "engines" / "sglang.yaml"  # every engine says how it runs every optimization, or that it cannot
    sglang.write_text(sglang.read_text().replace(
        "\ngpus:\n", "\n  kvoffload: {args: [--enable-hierarchical-cache]}\n\ngpus:\n"))
    result = pytester.runpytest_subprocess("--gpu", "b200", "--suite", "composability", "--infer-matrices", str(root),
                                           "--engine", "vllm",
                                           "--stack", "kvoffload and fp4", "--infer-plan", "--report-dir",
                                           str(pytester.path / "r"))
    assert result.ret == 0, result.outlines
    plan = json.loads((pytester.path / "r" / "b200" / "plan.json").read_text())
    stacks = {e["stack"] for e in plan}
    assert "b200-vllm-fp4+kvoffload" in stacks and "b200-vllm-fp4+disagg+wideep+mtp+kvoffload" in stacks
    assert all("--kv-offloading-size" in e["argv"] for e in plan if e["role"] not in ("router", "load"))


def test_plan_writes_every_role_without_launching(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--infer-plan",
                                           "--engine", "vllm", "--report-dir", str(pytester.path / "r"))
    assert result.ret == 0
    plan = json.loads((pytester.path / "r" / "mi355x" / "plan.json").read_text())
    assert {tuple(sorted(e)) for e in plan} == {("argv", "engine", "env", "gpus", "node", "nodes", "role", "stack")}
    by_stack: dict[str, list[dict[str, object]]] = {}
    for e in plan:
        by_stack.setdefault(str(e["stack"]), []).append(e)
    assert len(by_stack) == 16
    full = {e["role"]: e for e in by_stack["mi355x-vllm-fp4+disagg+wideep+mtp"]}
    assert set(full) == {"prefill", "prefill-node1", "decode", "decode-node1", "router", "load"}
    # The client, pointed at the router's front door: vLLM's own load at the workload's first level.
    load = " ".join(full["load"]["argv"])  # type: ignore[arg-type]
    assert " bench serve " in load and "--max-concurrency 4 " in load and "--ignore-eos" in load, load
    assert full["load"]["gpus"] == 0 and full["load"]["nodes"] == 0
    decode = " ".join(full["decode"]["argv"])  # type: ignore[arg-type]
    assert "amd/DeepSeek-R1-0528-MXFP4" in decode and "MoRIIOConnector" in decode and "kv_consumer" in decode
    assert "--all2all-backend mori_low_latency" in decode and '"method":"mtp"' in decode
    assert full["decode"]["env"]["VLLM_ROCM_USE_AITER"] == "1"  # type: ignore[index]
    assert "--headless" in full["decode-node1"]["argv"]  # type: ignore[operator]
    assert sum(int(e["gpus"]) for e in full.values()) == 32  # type: ignore[call-overload]
    assert "vllm serve" in result.stdout.str()


def test_unsupported_skips_and_known_broken_xfails_show_their_reasons(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "composability", "--collect-only", "-q",
                                           "--stack", "fp4 or wideep")
    assert result.ret == 0
    # Reasons come from the matrix: check them through the marks pytest reports with -rsx on a dry run.
    plan = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "composability", "--stack", "fp4", "-rs",
                                         "--report-dir", str(pytester.path / "r"))
    assert plan.ret == 0
    plan.stdout.fnmatch_lines(["*SKIPPED*unsupported: cpu has no fp4 support in hardware*"])
    md = (pytester.path / "r" / "cpu" / "composability.md").read_text()
    assert md.count("| skip ") == 8 and "no fp4 support" in md


def test_gpu_kind_missing_here_fails_fast_with_the_reason(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--gpu", "b200", "--suite", "composability", "--stack", "base",
                                           "--engine", "vllm", "--report-dir", str(pytester.path / "r"))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([("*b200-vllm-base not launched: needs 8 b200 device(s) on this node, found 0*"
                                  "--infer-plan*")])
    assert result.duration < 30


def test_conformance_plan_gives_the_lm_eval_command_lm_eval_parses(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "conformance", "--stack", "base",
                                           "--infer-plan", "--report-dir", str(pytester.path / "r"))
    assert result.ret == 0, result.outlines
    plan = json.loads((pytester.path / "r" / "cpu" / "plan.json").read_text())
    server = next(e for e in plan if e["role"] == "server")
    accuracy = [e for e in plan if e["role"] == "accuracy"]
    assert len(accuracy) == 1 and accuracy[0]["argv"][:3] == ["python", "-m", "lm_eval"], plan
    from lm_eval._cli import HarnessCLI

    args = HarnessCLI()._parser.parse_args(accuracy[0]["argv"][3:])
    port = server["argv"][server["argv"].index("--port") + 1]
    assert args.tasks == ["arith"] and args.model == "local-completions" and args.log_samples
    assert args.model_args["base_url"] == f"http://127.0.0.1:{port}/v1/completions", args.model_args
    assert args.include_path == str(pytester.path / "r" / "cpu" / "tasks")
