#!/usr/bin/env python3
"""Check SGLang command lines with SGLang's own argument parsers.

Runs inside the side env built by scripts/install-sglang-parser.sh (it needs the
real `sglang` package, and `sglang_router` for --router). SGLang never runs:
only its argparse parser is built and the parsed namespace turned into a
`ServerArgs` record (in sglang 0.5.23 `ServerArgs.__post_init__` does nothing;
hardware and model checks happen later in `resolve_once()`, which is not called).

Input (stdin): a JSON list; each item is one command's argv as a list of strings
(the arguments after `python -m sglang.launch_server`, or after
`python -m sglang_router.launch_router` with --router). A string item is split
with shlex.

Output (stdout): a JSON list with one object per command:
  {"ok": true,  "error": null, "stage": null, "warnings": [...], "values": {dest: value}}
  {"ok": false, "error": "unrecognized arguments: --foo", "stage": "argparse", ...}
`values` holds the parsed options whose value differs from the parser default.
`stage` says which step refused: "argparse" (the parser's own error message),
"construct" (ServerArgs/RouterArgs construction) or "check" (an extra check that
SGLang itself would make at launch: the --speculative-algorithm name).

Exit status: 0 when every command is ok, 1 when any is not, 2 on bad input.

  --router   parse with sglang_router's RouterArgs instead of SGLang's ServerArgs
  --info     print versions and every option of both parsers (flags, dest,
             choices, default) instead of reading stdin
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import shlex
import sys

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ParseError(Exception):
    pass


class RaisingParser(argparse.ArgumentParser):
    """ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message):  # noqa: D401 - argparse API
        raise ParseError(message)

    def exit(self, status=0, message=None):
        raise ParseError(
            (message or "").strip() or f"argparse exited with status {status}"
        )


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(_ANSI.sub("", record.getMessage()).strip())


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _changed(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> dict:
    out = {}
    for dest, value in vars(ns).items():
        if dest.startswith("_"):
            continue
        if value != parser.get_default(dest):
            out[dest] = _jsonable(value)
    return out


def _server_parser():
    from sglang.srt.server_args import ServerArgs

    parser = RaisingParser(prog="sglang.launch_server")
    ServerArgs.add_cli_args(parser)
    return parser


def _router_parser():
    from sglang_router.router_args import RouterArgs

    parser = RaisingParser(prog="sglang_router.launch_router")
    RouterArgs.add_cli_args(parser, use_router_prefix=False)
    return parser


def _check_server(argv: list[str]):
    """Mirror sglang.srt.server_args.prepare_server_args, minus logging setup."""
    from sglang.srt.server_args import ServerArgs

    parser = _server_parser()
    if "--config" in argv:
        from sglang.srt.utils.server_args_config_parser import ConfigArgumentMerger

        argv = ConfigArgumentMerger(parser).merge_config_with_args(argv)
    ns = parser.parse_args(argv)
    values = _changed(parser, ns)
    try:
        sa = ServerArgs.from_cli_args(ns)
    except Exception as exc:  # construction refused a value
        return values, "construct", f"{type(exc).__name__}: {exc}"
    algo = getattr(sa, "speculative_algorithm", None)
    if algo is not None:
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

        try:
            SpeculativeAlgorithm.from_string(algo)
        except ValueError as exc:
            return values, "check", str(exc)
    return values, None, None


def _check_router(argv: list[str]):
    from sglang_router.router_args import RouterArgs

    parser = _router_parser()
    ns = parser.parse_args(argv)
    values = _changed(parser, ns)
    try:
        ra = RouterArgs.from_cli_args(ns, use_router_prefix=False)
        ra._validate_router_args()
    except Exception as exc:
        return values, "construct", f"{type(exc).__name__}: {exc}"
    values["prefill_urls"] = _jsonable(ra.prefill_urls)
    values["decode_urls"] = _jsonable(ra.decode_urls)
    return values, None, None


def check(argv: list[str], router: bool = False) -> dict:
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    old_level = root.level
    root.setLevel(logging.WARNING)
    captured = io.StringIO()
    result = {"ok": False, "error": None, "stage": None, "warnings": [], "values": {}}
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            values, stage, error = (_check_router if router else _check_server)(argv)
        result.update(ok=error is None, error=error, stage=stage, values=values)
    except ParseError as exc:
        result.update(error=str(exc), stage="argparse")
    except Exception as exc:
        result.update(error=f"{type(exc).__name__}: {exc}", stage="construct")
    finally:
        root.removeHandler(collect)
        root.setLevel(old_level)
    extra = [_ANSI.sub("", line).strip() for line in captured.getvalue().splitlines()]
    result["warnings"] = collect.messages + [line for line in extra if line]
    return result


def _describe(parser: argparse.ArgumentParser) -> list[dict]:
    options = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        options.append(
            {
                "flags": list(action.option_strings),
                "dest": action.dest,
                "choices": _jsonable(sorted(action.choices, key=str))
                if isinstance(action.choices, (set, frozenset))
                else _jsonable(action.choices),
                "default": _jsonable(action.default),
                "nargs": _jsonable(action.nargs),
                "takes_value": action.nargs != 0,
            }
        )
    return options


def info() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict = {"python": sys.version.split()[0]}
    for dist in ("sglang", "sglang-router", "torch", "triton"):
        try:
            out[dist.replace("-", "_") + "_version"] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_") + "_version"] = None
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
        io.StringIO()
    ):
        out["server_options"] = _describe(_server_parser())
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
        from sglang.srt.speculative.spec_registry import _RESERVED_ALIASES

        out["speculative_algorithms"] = sorted(
            [m.name for m in SpeculativeAlgorithm if m.name != "NONE"]
            + list(_RESERVED_ALIASES)
        )
        try:
            out["router_options"] = _describe(_router_parser())
        except ImportError:
            out["router_options"] = None
    return out


def main(args: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--router", action="store_true")
    cli.add_argument("--info", action="store_true")
    opts = cli.parse_args(args)
    if opts.info:
        json.dump(info(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    try:
        commands = json.load(sys.stdin)
        if not isinstance(commands, list):
            raise ValueError("stdin must hold a JSON list of argv lists")
        commands = [shlex.split(c) if isinstance(c, str) else c for c in commands]
        if not all(isinstance(c, list) and all(isinstance(a, str) for a in c) for c in commands):
            raise ValueError("each command must be a list of strings (or one string)")
    except ValueError as exc:
        print(json.dumps({"error": f"bad input: {exc}"}), file=sys.stderr)
        return 2
    results = [check(argv, router=opts.router) for argv in commands]
    json.dump(results, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
