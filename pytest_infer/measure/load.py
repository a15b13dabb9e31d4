"""Load: one concurrency level driven by the engine's own benchmark client, `vllm bench serve`.

The real client, in the field's conventions (InferenceX): random prompts with a range ratio,
ignore_eos, prompts = k x concurrency, warm-ups, results saved as JSON and kept beside the store.
It runs in a long-lived worker (bench_worker.py) so vLLM is imported once per run, not once per level.
"""

from __future__ import annotations

import json
import math
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pytest_infer.matrix import Workload


class LoadError(RuntimeError):
    """The benchmark client failed or the server answered with errors."""


@dataclass(frozen=True)
class Target:
    base_url: str
    served_name: str
    tokenizer: str


def num_prompts(w: Workload, concurrency: int) -> int:
    return max(w.min_prompts, w.prompts_per_concurrency * concurrency)


def shortest_output(w: Workload) -> int:
    """The fewest output tokens a request of the workload asks for (vLLM's random dataset draws output
    lengths from [floor(len x (1 - ratio)), ceil(len x (1 + ratio))], vllm/benchmarks/datasets/utils.py)."""
    return max(1, math.floor(w.output_len * (1 - w.range_ratio)))


def bench_args(t: Target, w: Workload, concurrency: int, out: Path) -> list[str]:
    """Arguments of `vllm bench serve` for one level."""
    return [
        "--backend", "vllm", "--base-url", t.base_url, "--endpoint", "/v1/completions",
        "--model", t.served_name, "--tokenizer", t.tokenizer,
        "--dataset-name", "random", "--random-input-len", str(w.input_len),
        "--random-output-len", str(w.output_len), "--random-range-ratio", str(w.range_ratio),
        "--num-prompts", str(num_prompts(w, concurrency)), "--max-concurrency", str(concurrency),
        "--request-rate", "inf", "--ignore-eos", "--num-warmups", str(w.warmups), "--seed", str(w.seed),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        # --save-detailed: per-request output lengths (the worker keeps only those and the errors), so a
        # request counted as completed with no tokens is seen
        "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", str(out.parent),
        "--result-filename", out.name,
        *(["--temperature", str(w.temperature)] if w.temperature is not None else []),
    ]


def bench_argv(t: Target, w: Workload, concurrency: int, out: Path) -> list[str]:
    """The same level as a `vllm bench serve` command line (for the record, and to rerun by hand)."""
    vllm = Path(sys.executable).with_name("vllm")
    exe = str(vllm) if vllm.exists() else (shutil.which("vllm") or "vllm")
    return [exe, "bench", "serve", *bench_args(t, w, concurrency, out)]


@dataclass
class BenchClient:
    """The worker process; started on first use, restarted after a timeout or a crash."""

    log_dir: Path
    start_timeout_s: float = 300.0
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)
    _stderr: IO[str] | None = field(default=None, repr=False)

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.log_dir.mkdir(parents=True, exist_ok=True)
        startup = self.log_dir / "bench-worker.log"
        self._stderr = startup.open("a")
        self._proc = subprocess.Popen([sys.executable, "-m", "pytest_infer.measure.bench_worker"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      text=True, bufsize=1)
        if self._answer(self.start_timeout_s) is None:
            raise LoadError(f"the vllm bench worker did not start in {self.start_timeout_s:.0f} s; see {startup}")
        return self._proc

    def _answer(self, timeout_s: float) -> dict[str, Any] | None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            return None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, args: list[str], log: Path, timeout_s: float) -> None:
        proc = self._start()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"argv": args, "log": str(log)}) + "\n")
        proc.stdin.flush()
        t0 = time.monotonic()
        answer = self._answer(timeout_s)
        if answer is None:
            raise LoadError(f"vllm bench serve gave no answer in {time.monotonic() - t0:.0f} s "
                            f"(limit {timeout_s:.0f} s); see {log}")
        if not answer["ok"]:
            raise LoadError(str(answer["error"]))

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def run_level(client: BenchClient, t: Target, w: Workload, concurrency: int, out: Path,
              timeout_s: float = 1800) -> dict[str, object]:
    """Runs one level; returns the saved JSON. Raises LoadError with the client's last lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    log = out.with_suffix(".log")
    log.write_text(" ".join(bench_argv(t, w, concurrency, out)) + "\n")
    try:
        client.run(bench_args(t, w, concurrency, out), log, timeout_s)
    except LoadError as exc:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise LoadError(f"vllm bench serve at concurrency {concurrency}: {exc}; last lines of {log}:\n{tail}") from None
    if not out.exists():
        raise LoadError(f"vllm bench serve at concurrency {concurrency} saved no result {out}")
    data: dict[str, object] = json.loads(out.read_text())
    return data
