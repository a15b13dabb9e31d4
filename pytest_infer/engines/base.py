"""Engine-independent part of stack -> deployment: which roles, on which nodes, with which fragments.

An engine module adds only what is its own (parallelism flags, its argument parser). Everything an
optimization adds is data from matrices/engines/<engine>.yaml.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_infer.deployment import Deployment, Role
from pytest_infer.matrix import EngineFile, Fragment, Matrix, MatrixError
from pytest_infer.space import Stack

# Ports used when printing a plan (nothing is launched): fixed so that plans are reproducible.
PLAN_PORTS = {"server": 8000, "router": 8000, "prefill": 8100, "decode": 8200}


@dataclass
class Placement:
    """Where roles run: a host per node index and a port per role name."""

    hosts: Callable[[int], str] = lambda node: "127.0.0.1"
    ports: Callable[[str], int] = lambda role: PLAN_PORTS.get(role.split("-")[0], 8300)
    side_ports: Callable[[str], int] = lambda role: 5600 + PLAN_PORTS.get(role.split("-")[0], 8300) - 8000
    run_dir: Path = field(default_factory=lambda: Path("reports"))
    # Leased device ids (launch/leases.py), in the order ranks take them; empty: 0, 1, ... (plans, keys).
    devices: tuple[str, ...] = ()
    # Each server role on nodes of its own (Slurm: a disaggregated deployment's prefill and decode never
    # share a node, as InferenceX runs them), instead of packing small servers onto one node.
    own_nodes: bool = False


@dataclass
class ServerShape:
    """One server role before flags: how many devices, nodes, and how the ranks are laid out."""

    kind: str  # server | prefill | decode
    devices: int
    nodes: int
    data_parallel: bool
    tensor_parallel: int
    first_node: int = 0


def precision_of(matrix: Matrix, stack: Stack) -> str:
    found = [matrix.optimizations[o].precision for o in stack.opts if matrix.optimizations[o].precision]
    return found[-1] if found and found[-1] else matrix.gpus[stack.gpu].reference_precision


def checkpoint_of(matrix: Matrix, stack: Stack, model: str) -> str:
    """The weights for this stack's precision; raises MatrixError when the model has none."""
    vendor = matrix.gpus[stack.gpu].vendor
    precision = precision_of(matrix, stack)
    if model not in matrix.models:
        return model  # a path or hub id given with --model: used for every precision
    ckpt = matrix.models[model].checkpoint(precision, vendor)
    if ckpt is None:
        raise MatrixError(f"{matrix.root / 'models.yaml'}: key models.{model}.checkpoints.{precision}: "
                          f"no {precision} checkpoint for {vendor}")
    return ckpt


def server_shapes(matrix: Matrix, engine: EngineFile, stack: Stack, own_nodes: bool = False) -> list[ServerShape]:
    """Roles and their device counts; nodes are packed so small servers share a node, unless `own_nodes`."""
    kind = matrix.gpus[stack.gpu]
    tp = matrix.model_defaults[stack.gpu].tensor_parallel
    layouts = [engine.optimizations[o].layout for o in stack.opts]
    disagg = any(lay.disaggregate for lay in layouts)
    dp = any(lay.data_parallel for lay in layouts)
    dp_nodes = max([lay.nodes.get(stack.gpu, 1) for lay in layouts if lay.data_parallel] or [1])
    shapes = []
    for role in ("prefill", "decode") if disagg else ("server",):
        devices = dp_nodes * kind.gpus_per_node if dp else tp
        nodes = max(1, math.ceil(devices / kind.gpus_per_node))
        shapes.append(ServerShape(role, devices, nodes, dp, 1 if dp else tp))
    node, free = 0, kind.gpus_per_node
    for i, shape in enumerate(shapes):
        if i and free < kind.gpus_per_node and (shape.devices > free or shape.nodes > 1 or own_nodes):
            node, free = node + 1, kind.gpus_per_node
        shape.first_node = node
        if shape.nodes > 1:  # whole nodes: the next role starts on a fresh one
            node, free = node + shape.nodes, kind.gpus_per_node
        else:
            free -= shape.devices
    return shapes


def fragments(matrix: Matrix, engine: EngineFile, stack: Stack, role: str) -> list[Fragment]:
    vendor = matrix.gpus[stack.gpu].vendor
    out = engine.common.resolve(vendor, stack.gpu, role)
    precision = precision_of(matrix, stack)
    if precision in engine.precisions:
        out += engine.precisions[precision].resolve(vendor, stack.gpu, role)
    for opt in stack.opts:
        out += engine.optimizations[opt].resolve(vendor, stack.gpu, role)
    return out


def substitute(text: str, values: dict[str, str], where: str) -> str:
    try:
        return string.Template(text).substitute(values)
    except KeyError as exc:
        raise MatrixError(f"{where}: unknown placeholder ${{{exc.args[0]}}} in {text!r}") from None
    except ValueError as exc:
        raise MatrixError(f"{where}: bad placeholder in {text!r}: {exc}") from None


def _device(placement: Placement, index: int) -> str:
    return placement.devices[index % len(placement.devices)] if placement.devices else str(index)


def max_model_len(matrix: Matrix, gpu: str) -> int:
    w = matrix.workload(gpu)
    longest = math.ceil((w.input_len + w.output_len) * (1 + w.range_ratio))
    return (longest // 256 + 1) * 256


ParallelFlags = Callable[[ServerShape, int, int, str], list[str]]


def build(matrix: Matrix, engine: EngineFile, stack: Stack, model: str, model_path: str,
          placement: Placement, parallel_flags: ParallelFlags) -> Deployment:
    """Compose a deployment. `parallel_flags(shape, node_in_role, devices_per_node, head_host)`
    is the engine's own spelling of tensor / data / expert parallel layouts."""
    kind = matrix.gpus[stack.gpu]
    where = str(matrix.engine_files.get(engine.name, matrix.root / "engines" / f"{engine.name}.yaml"))
    roles: list[Role] = []
    shapes = server_shapes(matrix, engine, stack, placement.own_nodes)
    router_name = "router"
    used: dict[int, int] = {}  # devices already given out per node
    for shape in shapes:
        per_node = min(shape.devices, kind.gpus_per_node)
        head_host = placement.hosts(shape.first_node)
        args: list[str] = []
        env: dict[str, str] = {}
        params: dict[str, str] = {}
        for frag in fragments(matrix, engine, stack, shape.kind):
            args += frag.args
            env.update(frag.env)
            params.update(frag.params)
        for k in range(shape.nodes):
            name = shape.kind if k == 0 else f"{shape.kind}-node{k}"
            node = shape.first_node + k
            # Device indices count per node; across the deployment when each role has its own nodes (the
            # cpu kind's Slurm nodes are one machine: prefill and decode keep distinct cores, as locally).
            slot = 0 if placement.own_nodes else node
            host = placement.hosts(node)
            headless = k > 0
            port = None if headless else placement.ports(name)
            values = {
                **params,
                "model": model_path,
                "served_name": model,
                "host": host,
                "port": str(port if port is not None else placement.ports(shape.kind)),
                "side_port": str(placement.side_ports(name)),
                "router_host": placement.hosts(0),
                "router_port": str(placement.ports(router_name)),
                "run_dir": str(placement.run_dir),
                "max_model_len": str(max_model_len(matrix, stack.gpu)),
                # device index = core on cpu: each rank of each role pinned to its own core(s)
                "cpu_cores": "|".join(_device(placement, (used.get(slot, 0) + c) % kind.gpus_per_node)
                                      for c in range(per_node)),
            }
            used[slot] = used.get(slot, 0) + per_node
            argv = [substitute(a, values, f"{where} serve") for a in engine.serve]
            argv += parallel_flags(shape, k, per_node, head_host)
            argv += [substitute(a, values, f"{where} ({stack.label}, {shape.kind})") for a in args]
            role_env = {key: substitute(v, values, f"{where} env {key}") for key, v in env.items()}
            roles.append(Role(name=name, kind=shape.kind,
                              argv=argv, env=role_env, gpus=per_node, nodes=1, node=node, host=host,
                              port=port, health_path=engine.health_path))
    endpoint = roles[0].name
    if len(shapes) > 1:
        vendor = kind.vendor
        host = placement.hosts(0)
        values = {"host": host, "port": str(placement.ports(router_name)),
                  "side_port": str(placement.side_ports(router_name))}
        argv = [substitute(a, values, f"{where} router")
                for a in engine.router.by_vendor.get(vendor, engine.router.argv)]
        for r in roles:
            if r.port is not None:
                argv += [f"--{r.kind}", r.url]
        roles.append(Role(name=router_name, kind="router", argv=argv, env={}, gpus=0, node=0, host=host,
                          port=placement.ports(router_name), health_path=engine.router.health_path))
        endpoint = router_name
    return Deployment(stack=stack.id, engine=engine.name, gpu=stack.gpu, model=model_path, served_name=model,
                      roles=roles, endpoint=endpoint, nodes=max(r.node for r in roles) + 1)
