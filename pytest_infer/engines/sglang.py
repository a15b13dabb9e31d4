"""SGLang: its spelling of parallel layouts, and its own argument parsers to check generated command lines.

SGLang has no build for a machine without a GPU; its parsers are imported in a side environment
(`scripts/install-sglang-parser.sh`, sglang pinned there) and asked through `scripts/sglang_parse.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pytest_infer.engines.base import ServerShape

DIST_INIT_PORT = "20000"  # IX amd_utils/server_sglang.sh: --dist-init-addr IP:20000
ROOT = Path(__file__).resolve().parents[2]
PARSE_SCRIPT = ROOT / "scripts" / "sglang_parse.py"
SIDE_ENV_VARIABLE = "PYTEST_INFER_SGLANG_ENV"  # where the side environment is (default: <repo>/.sglang-env)
LAUNCH_SERVER, LAUNCH_ROUTER = "sglang.launch_server", "sglang_router.launch_router"


def parallel_flags(shape: ServerShape, node_in_role: int, per_node: int, head_host: str) -> list[str]:
    """Tensor parallel, or DP attention + expert parallel over every rank (wide EP); across nodes, one
    launch_server per node joined by --dist-init-addr on the role's first node."""
    n = str(shape.devices)
    flags = (["--tp-size", n, "--dp-size", n, "--ep-size", n] if shape.data_parallel
             else ["--tp-size", str(shape.tensor_parallel)])
    if shape.nodes > 1:
        flags += ["--dist-init-addr", f"{head_host}:{DIST_INIT_PORT}", "--nnodes", str(shape.nodes),
                  "--node-rank", str(node_in_role)]
    return flags


def side_python() -> Path:
    """The side environment's interpreter; ImportError when it is not built (nothing to check with)."""
    env = Path(os.environ.get(SIDE_ENV_VARIABLE) or ROOT / ".sglang-env")
    python = env / "bin" / "python"
    if not python.exists() or not PARSE_SCRIPT.exists():
        raise ImportError(f"SGLang's parser is not installed: no {python} (scripts/install-sglang-parser.sh)")
    return python


def parse(argvs: list[list[str]], router: bool = False) -> list[str | None]:
    """Each command line (the arguments after `-m sglang.launch_server`, or after the router's module with
    `router`) parsed by SGLang's own parser: None when accepted, else its message (one line)."""
    done = subprocess.run([str(side_python()), str(PARSE_SCRIPT), *(["--router"] if router else [])],
                          input=json.dumps(argvs), capture_output=True, text=True, timeout=300, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{PARSE_SCRIPT} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return [None if r["ok"] else f"{r['stage']}: {r['error']}" for r in json.loads(done.stdout)]


def arguments(argv: list[str]) -> tuple[list[str], bool]:
    """(the arguments after the module, whether it is the router) of a generated command line."""
    for module, router in ((LAUNCH_SERVER, False), (LAUNCH_ROUTER, True)):
        if module in argv:
            return argv[argv.index(module) + 1:], router
    if argv[:2] == ["sglang", "serve"]:  # --infer-engine-args are checked as `<engine> serve model ARGS`
        return ["--model-path", *argv[2:]], False
    raise ValueError(f"not an SGLang server or router command line: {argv[:4]}")


def check_command_line(argv: list[str]) -> None:
    """Raise ValueError with SGLang's message when its parser refuses the command line."""
    args, router = arguments(argv)
    error = parse([args], router)[0]
    if error is not None:
        raise ValueError(error)
