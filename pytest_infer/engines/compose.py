"""Stack -> deployment through the engine's adapter; --infer-engine-args checked by the engine's parser."""

from __future__ import annotations

import shlex

from pytest_infer.deployment import Deployment
from pytest_infer.engines.base import Placement, build, checkpoint_of
from pytest_infer.engines.registry import adapter
from pytest_infer.matrix import Matrix
from pytest_infer.space import Stack

# Flags every role gets from the launcher: given again, the last one wins and the launcher waits on a port
# or a name the server no longer uses (until the launch timeout).
LAUNCHER_OWNS = {
    "--port": "it gives each role a free port and polls that one",
    "--host": "it binds each role to the address the router and the client reach",
    "--served-model-name": "the client and lm-eval ask for the model by the name it sets",
}


def deployment_for(matrix: Matrix, stack: Stack, model: str, placement: Placement,
                   local_models: dict[str, str] | None = None) -> Deployment:
    """The deployment of `stack`; `local_models` maps a built model's name to its directory."""
    ckpt = checkpoint_of(matrix, stack, model)
    path = (local_models or {}).get(ckpt, ckpt)
    return build(matrix, matrix.engines[stack.engine], stack, model, path, placement,
                 adapter(stack.engine).parallel_flags)


def parse_engine_args(text: str, engines: list[str]) -> tuple[str, ...]:
    """--infer-engine-args: flags appended to every serving role. Raises ValueError (one line) when they
    do not split like a shell line, do not start with a flag, or the engine's own parser refuses them."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"--infer-engine-args {text!r}: {exc}") from None
    if not args or not args[0].startswith("-"):
        raise ValueError(f"--infer-engine-args {text!r}: expected engine flags, e.g. '--max-num-seqs 4'")
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in LAUNCHER_OWNS:
            raise ValueError(f"--infer-engine-args {text!r}: {flag} is the launcher's ({LAUNCHER_OWNS[flag]})")
    for engine in engines:
        check = getattr(adapter(engine), "check_command_line", None)
        if check is None:
            continue
        try:
            check([engine, "serve", "model", *args])
        except ValueError as exc:
            raise ValueError(f"--infer-engine-args {text!r}: {engine} refuses them: {exc}") from None
        except ImportError:
            continue  # the engine is not installed here (a plan): nothing to check with
    return args
