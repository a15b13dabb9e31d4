"""vLLM: its spelling of parallel layouts, and its own argument parser to check generated command lines."""

from __future__ import annotations

import contextlib
import io
import warnings
from functools import cache
from typing import Any

from pytest_infer.engines.base import ServerShape

DP_RPC_PORT = "13345"


def parallel_flags(shape: ServerShape, node_in_role: int, per_node: int, head_host: str) -> list[str]:
    """Tensor parallel in one server, or data parallel + expert parallel ranks (wide EP), across nodes."""
    if shape.data_parallel:
        flags = ["--tensor-parallel-size", "1", "--data-parallel-size", str(shape.devices)]
        if shape.nodes > 1:
            flags += ["--data-parallel-size-local", str(per_node), "--data-parallel-address", head_host,
                      "--data-parallel-rpc-port", DP_RPC_PORT]
            if node_in_role:
                flags += ["--headless", "--data-parallel-start-rank", str(node_in_role * per_node)]
        return flags
    flags = ["--tensor-parallel-size", str(shape.tensor_parallel)]
    if shape.nodes > 1:
        flags += ["--nnodes", str(shape.nodes), "--node-rank", str(node_in_role), "--master-addr", head_host]
        if node_in_role:
            flags += ["--headless"]
    return flags


@cache
def _serve_parser() -> Any:
    # Imported lazily: vllm takes ~10 s to import, and only the parser check needs it. Its imports warn
    # (torch.jit deprecations) on stderr, where a usage error must be the one line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))  # type: ignore[no-untyped-call]
    return parser, validate_parsed_serve_args


def check_command_line(argv: list[str]) -> None:
    """Parse a generated `vllm serve ...` argv with the installed vLLM's own parser and validators.

    Raises ValueError with vLLM's message when vLLM would refuse the command line.
    """
    if argv[:2] != ["vllm", "serve"]:
        raise ValueError(f"not a vllm serve command line: {argv[:3]}")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser, validate = _serve_parser()
            args = parser.parse_args(argv[2:])
        validate(args)
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        raise ValueError(lines[-1] if lines else "vllm's parser refused the command line") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
