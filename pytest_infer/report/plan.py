"""--infer-plan: every role's exact argv and env, printed and written to <report-dir>/<gpu>/plan.json."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

from pytest_infer.engines import deployment_for
from pytest_infer.engines.base import Placement
from pytest_infer.space import Stack

if TYPE_CHECKING:
    from _pytest._io import TerminalWriter

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
    return entries


def write_plan(infer: InferSession, stacks: list[Stack], tw: TerminalWriter) -> None:
    entries = plan_entries(infer, stacks)
    for e in entries:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in e["env"].items())  # type: ignore[attr-defined]
        tw.line(f"# {e['stack']} {e['role']} (node {e['node']}, {e['gpus']} GPU(s))")
        tw.line(f"{env} {shlex.join(e['argv'])}".strip())  # type: ignore[arg-type]
    infer.report_dir.mkdir(parents=True, exist_ok=True)
    path = infer.report_dir / "plan.json"
    path.write_text(json.dumps(entries, indent=1))
    tw.line(f"plan: {len(entries)} role(s) of {len({e['stack'] for e in entries})} stack(s) written to {path}")
