"""A long-lived `vllm bench serve`: vLLM's own benchmark (`vllm.benchmarks.serve.main`, what the CLI
subcommand calls), imported once and run once per request.

The CLI spends ~12 s importing vLLM before each level on a small CPU; repeats x levels x stacks made that
the largest cost of a run. Protocol: one JSON line per request on stdin, {"argv": [...], "log": path};
one JSON line per answer on the original stdout, {"ok": bool, "error": str}. The benchmark's own output
(and vLLM's logging) goes to the request's log file.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # keep the protocol away from vLLM's prints
    devnull, stderr = os.open(os.devnull, os.O_WRONLY), os.dup(2)
    os.dup2(devnull, 1)
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        answer: dict[str, object] = {"ok": True, "error": ""}
        try:
            parser = FlexibleArgumentParser(prog="vllm bench serve")  # type: ignore[no-untyped-call]
            add_cli_args(parser)
            args = parser.parse_args(request["argv"])
            bench(args)
            if args.save_detailed:
                _keep_per_request_counts(os.path.join(args.result_dir, args.result_filename))
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(devnull, 1)
            os.dup2(stderr, 2)
        answers.write(json.dumps(answer) + "\n")


def _keep_per_request_counts(path: str) -> None:
    """--save-detailed writes every request's texts and token gaps (tens of MB on a GPU sweep): keep only
    the per-request output lengths and errors, which show requests counted as completed with no tokens."""
    with open(path) as fh:
        data = json.load(fh)
    for name in ("input_lens", "ttfts", "itls", "latencies", "start_times", "queue_times", "generated_texts"):
        data.pop(name, None)
    data["errors"] = [str(e)[:300] for e in data.get("errors", [])]
    with open(path, "w") as fh:
        json.dump(data, fh)


if __name__ == "__main__":
    main()
