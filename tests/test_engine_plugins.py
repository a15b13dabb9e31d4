"""A third engine added from outside the package, the way TensorRT-LLM or a vendor's fork would: a module
and its YAML in their own distribution, found through the `pytest_infer.engines` entry point group."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ADAPTER = '''
"""toyengine: a third party's adapter, outside pytest_infer."""


def parallel_flags(shape, node_in_role, per_node, head_host):
    flags = ["--toy-tp", str(shape.tensor_parallel)]
    if shape.nodes > 1:
        flags += ["--toy-peer", head_host, "--toy-rank", str(node_in_role)]
    return flags


def check_command_line(argv):
    bad = [a for a in argv if a.startswith("--bad")]
    if bad:
        raise ValueError(f"toy-serve: unrecognized arguments: {' '.join(bad)}")
'''

ENGINE_YAML = """
name: toy
package: [toyengine]
serve: [toy-serve, --model, "${model}"]
router: {argv: [toy-router, --port, "${port}"]}
common: {args: [--port, "${port}"]}
optimizations:
  fp4: {}
  disagg: {layout: {disaggregate: true}, prefill: {args: [--toy-role, prefill]}, decode: {args: [--toy-role, decode]}}
  wideep: {layout: {data_parallel: true, nodes: {mi355x: 2}}, args: [--toy-ep]}
  mtp: {args: [--toy-draft, "3"]}
gpus:
  mi355x: {unsupported: {wideep: "the toy has no expert parallel on this GPU"}}
"""


def _distribution(root: Path, module: str = "toyengine", body: str = ADAPTER, name: str = "toy") -> Path:
    """A distribution on sys.path as pip would leave it: the package and a dist-info with entry points."""
    site = root / "site"
    pkg = site / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    (pkg / f"{name}.yaml").write_text(ENGINE_YAML.replace("name: toy", f"name: {name}"))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[pytest_infer.engines]\n{name} = {module}\n")
    return site


def test_a_third_party_engine_plans_every_stack_with_its_own_flags(pytester: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(_distribution(pytester.path)))
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--engine", "toy",
                                           "--infer-plan", "--report-dir", str(pytester.path / "r"))
    assert result.ret == 0, result.stdout.str()
    plan = json.loads((pytester.path / "r" / "mi355x" / "plan.json").read_text())
    stacks = {e["stack"] for e in plan}
    # wideep is unsupported in the YAML shipped beside the adapter: planned nowhere
    assert "mi355x-toy-fp4+disagg+mtp" in stacks and not any("wideep" in s for s in stacks), stacks
    roles = {(e["stack"], e["role"]): " ".join(e["argv"]) for e in plan}
    assert roles[("mi355x-toy-base", "server")].startswith("toy-serve --model ")
    assert "--toy-tp 8" in roles[("mi355x-toy-base", "server")]  # the adapter's own parallel flags
    prefill = roles[("mi355x-toy-fp4+disagg+mtp", "prefill")]
    assert "--toy-role prefill" in prefill and "--toy-draft 3" in prefill, prefill
    assert roles[("mi355x-toy-fp4+disagg+mtp", "router")].startswith("toy-router --port ")


def test_the_plugin_engine_is_listed_and_its_parser_checks_engine_args(pytester: pytest.Pytester,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(_distribution(pytester.path)))
    unknown = pytester.runpytest_subprocess("--gpu", "mi355x", "--engine", "nope", "--infer-plan")
    assert unknown.ret == 4
    unknown.stderr.fnmatch_lines(["*unknown engine 'nope' for mi355x; valid: sglang, toy, vllm*"])
    refused = pytester.runpytest_subprocess("--gpu", "mi355x", "--engine", "toy", "--infer-plan",
                                            "--infer-engine-args=--bad-flag 1")
    assert refused.ret == 4
    refused.stderr.fnmatch_lines(["*--infer-engine-args '--bad-flag 1': toy refuses them: "
                                  "toy-serve: unrecognized arguments: --bad-flag*"])


def test_a_broken_plugin_is_one_line_naming_its_entry_point(pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    body = textwrap.dedent("""
        import toy_sdk_that_is_not_installed  # the plug-in's own dependency is missing
    """)
    monkeypatch.setenv("PYTHONPATH", str(_distribution(pytester.path, "brokenengine", body, "broken")))
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--engine", "broken", "--infer-plan")
    assert result.ret == 4
    errors = [ln for ln in result.stderr.lines if "broken" in ln]
    assert len(errors) == 1 and "Traceback" not in result.stderr.str(), result.stderr.str()
    assert "entry point pytest_infer.engines:broken = brokenengine: import failed: ModuleNotFoundError" in errors[0]
