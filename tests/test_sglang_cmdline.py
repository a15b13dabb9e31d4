"""Every generated SGLang command line, for every stack on every GPU kind and every role (routers too),
parsed by SGLang's own parsers (sglang 0.5.23 and sglang-router 0.3.2 in the side environment that
scripts/install-sglang-parser.sh builds; `.ci/run` builds it and sets PYTEST_INFER_REQUIRE_SGLANG, so a
missing one fails there instead of skipping). And a sample compared with what InferenceX launches."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pytest_infer.deployment import Deployment
from pytest_infer.engines.base import Placement
from pytest_infer.engines.compose import deployment_for
from pytest_infer.engines.sglang import arguments, parse, side_python
from pytest_infer.matrix import Matrix, default_root
from pytest_infer.space import Stack, all_stacks, parse_label

pytest_plugins = ["pytester"]
MATRIX = Matrix(default_root())
try:
    side_python()
except ImportError as exc:
    if os.environ.get("PYTEST_INFER_REQUIRE_SGLANG"):
        raise
    pytest.skip(str(exc), allow_module_level=True)


def _deployment(matrix: Matrix, stack: Stack) -> Deployment:
    return deployment_for(matrix, stack, matrix.model_defaults[stack.gpu].model,
                          Placement(hosts=lambda n: f"node{n}", run_dir=Path("/tmp/r")))


def _stacks(matrix: Matrix) -> list[Stack]:
    return [s for gpu in matrix.gpus if "sglang" in matrix.engines_for(gpu)
            for s in all_stacks(gpu, "sglang", list(matrix.optimizations))
            if matrix.unsupported_reason("sglang", gpu, s.opts) is None]


def _commands(matrix: Matrix, tag: str = "") -> dict[bool, list[tuple[str, list[str]]]]:
    """Every role's arguments, server lines under False and router lines under True, each with its name."""
    lines: dict[bool, list[tuple[str, list[str]]]] = {False: [], True: []}
    for stack in _stacks(matrix):
        for role in _deployment(matrix, stack).roles:
            args, router = arguments(role.argv)
            lines[router].append((f"{tag}{stack.id} {role.name}", args))
    return lines


def _refused(*matrices: Matrix) -> tuple[list[str], int]:
    """'<tag><stack> <role>: <SGLang's message>' for every command line SGLang's parsers refuse (one parser
    run per kind: importing sglang takes seconds); and how many were checked."""
    lines: dict[bool, list[tuple[str, list[str]]]] = {False: [], True: []}
    for i, matrix in enumerate(matrices):
        for router, items in _commands(matrix, f"{i}:" if len(matrices) > 1 else "").items():
            lines[router] += items
    refused = []
    for router, items in lines.items():
        for (who, _), error in zip(items, parse([a for _, a in items], router=router), strict=True):
            if error is not None:
                refused.append(f"{who}: {error}")
    return refused, sum(map(len, lines.values()))


def test_every_generated_command_line_parses() -> None:
    stacks = _stacks(MATRIX)
    assert "cpu" not in {s.gpu for s in stacks}  # no SGLang build for a CPU here
    assert len(stacks) == 16 * 5 + 8 * 4  # FP4 kinds (mi355x, b200, b300, gb200, gb300) all 16; Hopper, MI300X/325X 8
    refused, checked = _refused(MATRIX)
    assert not refused, "\n".join(refused[:5])
    assert checked > 300
    print(f"{checked} SGLang server and router command lines parsed by sglang's own parsers")


WRONG = [  # (in sglang.yaml, replaced by, what SGLang's parser says)
    ("[--moe-a2a-backend, mori,", "[--moe-a2a-backend, moriio,", "invalid choice: 'moriio'"),
    ("--disaggregation-mode, prefill]", "--disagregation-mode, prefill]", "unrecognized arguments: --disagregation"),
    ("[--speculative-algorithm, EAGLE,", "[--speculative-algorithm, MTP,", "Unknown speculative algorithm name: MTP"),
    ("[--quantization, modelopt_fp4]", "[--quantization, fp4]", "invalid choice: 'fp4'"),
    ("--policy, random]", "--policy, consistent_hashing]", "invalid choice: 'consistent_hashing'"),
]


def test_a_wrong_flag_in_the_matrix_fails(tmp_path: Path) -> None:
    matrices = []
    for i, (find, replace, _) in enumerate(WRONG):
        root = tmp_path / f"m{i}"
        shutil.copytree(default_root(), root)
        path = root / "engines" / "sglang.yaml"
        assert find in path.read_text()
        path.write_text(path.read_text().replace(find, replace))
        matrices.append(Matrix(root))
    refused, _ = _refused(*matrices)
    for i, (_, _, message) in enumerate(WRONG):
        mine = [r for r in refused if r.startswith(f"{i}:")]
        assert mine and all(message in r for r in mine), (message, mine[:3])


def _flags(argv: list[str]) -> dict[str, str]:
    """--flag -> its value ('' for a switch), as a command line reads."""
    out: dict[str, str] = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else "--"
            out[a] = "" if nxt.startswith("--") else nxt
    return out


def _role(gpu: str, label: str, role: str) -> tuple[dict[str, str], dict[str, str]]:
    stack = Stack(gpu, "sglang", parse_label(label, list(MATRIX.optimizations)))
    r = _deployment(MATRIX, stack).role(role)
    return _flags(r.argv), r.env


# What InferenceX launches (SemiAnalysisAI/InferenceX; each file at the commit that last changed it, as of
# the snapshot 843c6254ff69b567f772f6a5fd97675af3d04431), flag -> value; "" for a switch.
IX_MI355X_FP4_MTP = {  # benchmarks/single_node/fixed_seq_len/dsr1_fp4_mi355x_mtp.sh @1b234994f9dc
    "--attention-backend": "aiter", "--kv-cache-dtype": "fp8_e4m3", "--disable-radix-cache": "",
    "--mem-fraction-static": "0.8", "--speculative-algorithm": "EAGLE", "--speculative-num-steps": "3",
    "--speculative-eagle-topk": "1", "--speculative-num-draft-tokens": "4", "--trust-remote-code": ""}
IX_MI355X_ENV = {"SGLANG_USE_AITER": "1", "ROCM_QUICK_REDUCE_QUANTIZATION": "INT4", "SGLANG_ENABLE_SPEC_V2": "1"}
IX_MI355X_DISAGG_EP = {  # benchmarks/multi_node/amd_utils/models.yaml @e944302e8d37 (DeepSeek-R1-0528: base, EP, DP)
    "--kv-cache-dtype": "fp8_e4m3", "--attention-backend": "aiter", "--disaggregation-transfer-backend": "mori",
    "--moe-a2a-backend": "mori", "--deepep-mode": "normal", "--enable-dp-attention": "", "--moe-dense-tp-size": "1",
    "--enable-dp-lm-head": "", "--disable-radix-cache": ""}
IX_B200_FP4 = {  # benchmarks/single_node/fixed_seq_len/dsr1_fp4_b200.sh @94d4968629b6
    "--quantization": "modelopt_fp4", "--kv-cache-dtype": "fp8_e4m3", "--trust-remote-code": "",
    "--mem-fraction-static": "0.85", "--tensor-parallel-size": "8"}
IX_B200_DISAGG_FP4 = {  # srt-slurm-recipes/sglang/dsr1/b200-fp4/1k1k/disagg/mtp/1k1k_mtp_maxtpt_0.yaml @e0e00cdeb11e
    "--quantization": "modelopt_fp4", "--disaggregation-transfer-backend": "nixl", "--kv-cache-dtype": "fp8_e4m3",
    "--disable-radix-cache": ""}
ALIASES = {"--tensor-parallel-size": "--tp-size"}  # the same option in SGLang's parser


def _differences(ours: dict[str, str], theirs: dict[str, str]) -> list[str]:
    return [f"{flag}: InferenceX {value!r}, ours {ours.get(ALIASES.get(flag, flag))!r}"
            for flag, value in theirs.items() if ours.get(ALIASES.get(flag, flag)) != value]


def test_generated_commands_launch_what_inferencex_launches() -> None:
    flags, env = _role("mi355x", "fp4+mtp", "server")
    assert not _differences(flags, IX_MI355X_FP4_MTP)
    assert {k: env.get(k) for k in IX_MI355X_ENV} == IX_MI355X_ENV
    for role in ("prefill", "decode"):
        flags, _ = _role("mi355x", "fp4+disagg+wideep+mtp", role)
        assert not _differences(flags, IX_MI355X_DISAGG_EP), role
        assert flags["--disaggregation-mode"] == role
        assert flags["--tp-size"] == flags["--dp-size"] == flags["--ep-size"] == "16"  # DP16/EP16 on 2 nodes
        assert flags["--speculative-num-steps"] == "3"  # MTP identical on prefill and decode
    flags, _ = _role("b200", "fp4", "server")
    assert not _differences(flags, IX_B200_FP4)
    for role in ("prefill", "decode"):
        assert not _differences(_role("b200", "fp4+disagg", role)[0], IX_B200_DISAGG_FP4), role
    router = _flags(_deployment(MATRIX, Stack("mi355x", "sglang", ("disagg",))).role("router").argv)
    assert "--pd-disaggregation" in router and router["--policy"] == "random"  # amd_utils/server_sglang.sh DI


def test_a_launcher_that_drops_a_flag_is_caught_by_the_comparison() -> None:
    flags, _ = _role("mi355x", "fp4+mtp", "server")
    del flags["--speculative-eagle-topk"]
    flags["--attention-backend"] = "triton"
    assert _differences(flags, IX_MI355X_FP4_MTP) == [
        "--attention-backend: InferenceX 'aiter', ours 'triton'", "--speculative-eagle-topk: InferenceX '1', ours None"]


def test_the_mi355x_plan_is_accepted_by_sglang_with_disagg_behind_its_router(pytester: pytest.Pytester) -> None:
    """The acceptance line: `--engine sglang --infer-plan` on mi355x, every role of every stack parsed."""
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--engine", "sglang",
                                           "--infer-plan", "--report-dir", str(pytester.path / "r"))
    assert result.ret == 0, result.stdout.str()
    plan = json.loads((pytester.path / "r" / "mi355x" / "plan.json").read_text())
    assert len({e["stack"] for e in plan}) == 16
    served = [e for e in plan if e["role"] != "load"]
    lines: dict[bool, list[tuple[str, list[str]]]] = {False: [], True: []}
    for e in served:
        args, router = arguments(e["argv"])
        lines[router].append((f"{e['stack']} {e['role']}", args))
    refused = [f"{who}: {err}" for router, items in lines.items()
               for (who, _), err in zip(items, parse([a for _, a in items], router=router), strict=True) if err]
    assert not refused, refused
    disagg = {e["stack"] for e in served if e["role"] == "prefill"}
    routed = {e["stack"] for e in served if e["role"] == "router" and "sglang_router.launch_router" in e["argv"]
              and "--pd-disaggregation" in e["argv"]}
    assert len(disagg) == 8 and routed == disagg, (disagg, routed)
    # Same client as vLLM's stacks: the workload's load, pointed at the router.
    load = next(e for e in plan if e["stack"] == "mi355x-sglang-disagg" and e["role"] == "load")
    assert " bench serve " in " ".join(load["argv"]) and "--ignore-eos" in load["argv"]
