"""--infer-plan: every role's exact argv and env, and the client the suite runs against the deployment
(`vllm bench serve`, or lm-eval for conformance), printed and written to <report-dir>/<gpu>/plan.json."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

from pytest_infer.engines import deployment_for
from pytest_infer.engines.base import Placement
from pytest_infer.space import Stack

if TYPE_CHECKING:
    from pathlib import Path

    from _pytest._io import TerminalWriter

    from pytest_infer.deployment import Deployment
    from pytest_infer.session import InferSession


def plan_entries(infer: InferSession, stacks: list[Stack]) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for stack in stacks:
        if infer.unsupported(stack):
            continue
        run_dir = infer.report_dir / "runs" / stack.id
        local, _ = infer._local_models(build=False)
        dep = deployment_for(infer.matrix, stack, infer.model, Placement(run_dir=run_dir), local)
        if dep.nodes > 1:  # name the hosts: a cluster run substitutes its own
            dep = deployment_for(infer.matrix, stack, infer.model,
                                 Placement(hosts=lambda n: f"node{n}", run_dir=run_dir), local)
        for role in dep.roles:
            entries.append({"stack": stack.id, "engine": stack.engine, "role": role.name, "argv": role.argv,
                            "env": role.env, "gpus": role.gpus, "nodes": role.nodes, "node": role.node})
        role_name, argv = _client(infer, stack, dep, run_dir)
        entries.append({"stack": stack.id, "engine": stack.engine, "role": role_name, "argv": argv, "env": {},
                        "gpus": 0, "nodes": 0, "node": 0})
    return entries


def _client(infer: InferSession, stack: Stack, dep: Deployment, run_dir: Path) -> tuple[str, list[str]]:
    """The client the suite points at the front door: lm-eval, or the load at the first level (the others
    differ in --max-concurrency and --num-prompts). Paths are where the run would put them."""
    if infer.suite == "conformance":
        from pytest_infer.conformance import accuracy_spec
        from pytest_infer.measure.evaltask import lm_eval_argv, task_path

        spec = accuracy_spec(infer.matrix, infer.model)
        cache = infer.report_dir / "results" / "accuracy" / f"{stack.id}.lmcache"
        args = lm_eval_argv(spec, dep.endpoint_url, dep.served_name, run_dir / "lm-eval", cache,
                            task_path(spec, infer.report_dir / "tasks"))
        return "accuracy", ["python", "-m", "lm_eval", *args]
    from pytest_infer.measure.load import Target, bench_argv

    w = infer.matrix.workload(stack.gpu)
    c = w.concurrency[0]
    return "load", bench_argv(Target(dep.endpoint_url, dep.served_name, dep.model), w, c,
                              run_dir / "bench" / f"c{c}-r0.json")


def write_plan(infer: InferSession, stacks: list[Stack], tw: TerminalWriter) -> None:
    entries = plan_entries(infer, stacks)
    for e in entries:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in e["env"].items())  # type: ignore[attr-defined]
        where = f"node {e['node']}, {e['gpus']} GPU(s)" if e["nodes"] else "client, on the launching host"
        tw.line(f"# {e['stack']} {e['role']} ({where})")
        tw.line(f"{env} {shlex.join(e['argv'])}".strip())  # type: ignore[arg-type]
    infer.report_dir.mkdir(parents=True, exist_ok=True)
    path = infer.report_dir / "plan.json"
    path.write_text(json.dumps(entries, indent=1))
    roles = sum(1 for e in entries if e["nodes"])
    tw.line(f"plan: {roles} role(s) and their clients, {len({e['stack'] for e in entries})} stack(s), written to {path}")
