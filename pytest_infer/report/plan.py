"""--infer-plan: every role's exact argv and env (--infer-engine-args included), and the client the suite
runs against the deployment (`vllm bench serve`, or lm-eval for conformance) with the paths the run would
use; printed and written to <report-dir>/<gpu>/plan.json. Built by the objects that run it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_infer.space import Stack

if TYPE_CHECKING:
    from _pytest._io import TerminalWriter

    from pytest_infer.deployment import Deployment
    from pytest_infer.lab import Lab
    from pytest_infer.selection import Selection

    Client = Callable[[Stack, Deployment], tuple[str, list[str]]]  # the suite's plan_client


@dataclass(frozen=True)
class PlanEntry:
    stack: str
    engine: str
    role: str  # a serving role, or the client: load | accuracy
    argv: list[str]
    env: dict[str, str]
    gpus: int
    nodes: int  # 0: the client, on the launching host
    node: int


def plan_entries(stacks: list[Stack], selection: Selection, lab: Lab, client: Client) -> list[PlanEntry]:
    entries: list[PlanEntry] = []
    for stack in stacks:
        if selection.unsupported(stack):
            continue
        runner = lab.runner(stack.engine)
        dep = runner.plan(stack)
        if dep.nodes > 1 and runner.slurm is None:  # name the hosts: a cluster run substitutes its own
            dep = runner.plan(stack, hosts=lambda n: f"node{n}")
        for role in dep.roles:
            entries.append(PlanEntry(stack.id, stack.engine, role.name, role.argv, role.env, role.gpus, role.nodes,
                                     role.node))
        role_name, argv = client(stack, dep)
        entries.append(PlanEntry(stack.id, stack.engine, role_name, argv, {}, 0, 0, 0))
    return entries


def write_batch_scripts(stacks: list[Stack], selection: Selection, lab: Lab, folder: Path) -> list[Path]:
    """--launcher slurm: the batch script each deployment would be submitted as, `<folder>/<stack>.sbatch`
    (its roles' logs in the run's runs/<stack>/logs/, as a real launch)."""
    written = []
    for stack in stacks:
        if selection.unsupported(stack):
            continue
        runner = lab.runner(stack.engine)
        launcher = runner.launcher(stack, runner.plan(stack), runner.paths.logs(stack.id), sweep=False)
        script = getattr(launcher, "script", None)
        if script is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stack.id}.sbatch"
        path.write_text(script())
        written.append(path)
    return written


def write_plan(entries: list[PlanEntry], path: Path, tw: TerminalWriter) -> None:
    for e in entries:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in e.env.items())
        where = f"node {e.node}, {e.gpus} GPU(s)" if e.nodes else "client, on the launching host"
        tw.line(f"# {e.stack} {e.role} ({where})")
        tw.line(f"{env} {shlex.join(e.argv)}".strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(e) for e in entries], indent=1))
    roles = sum(1 for e in entries if e.nodes)
    tw.line(f"plan: {roles} role(s) and their clients, {len({e.stack for e in entries})} stack(s), written to {path}")
