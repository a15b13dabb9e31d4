"""Load: one concurrency level driven by the engine's own benchmark client, `vllm bench serve`.

The real client, in the field's conventions (InferenceX): random prompts with a range ratio,
ignore_eos, prompts = k x concurrency, warm-ups, results saved as JSON and kept beside the store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


def bench_argv(t: Target, w: Workload, concurrency: int, out: Path) -> list[str]:
    vllm = Path(sys.executable).with_name("vllm")
    return [
        str(vllm) if vllm.exists() else (shutil.which("vllm") or "vllm"), "bench", "serve",
        "--backend", "vllm", "--base-url", t.base_url, "--endpoint", "/v1/completions",
        "--model", t.served_name, "--tokenizer", t.tokenizer,
        "--dataset-name", "random", "--random-input-len", str(w.input_len),
        "--random-output-len", str(w.output_len), "--random-range-ratio", str(w.range_ratio),
        "--num-prompts", str(num_prompts(w, concurrency)), "--max-concurrency", str(concurrency),
        "--request-rate", "inf", "--ignore-eos", "--num-warmups", str(w.warmups), "--seed", str(w.seed),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        "--disable-tqdm", "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
    ]


def run_level(t: Target, w: Workload, concurrency: int, out: Path, timeout_s: float = 1800) -> dict[str, object]:
    """Runs one level; returns the saved JSON. Raises LoadError with the client's last lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    log = out.with_suffix(".log")
    with log.open("w") as fh:
        try:
            proc = subprocess.run(bench_argv(t, w, concurrency, out), stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise LoadError(f"vllm bench serve at concurrency {concurrency} did not finish in {timeout_s:.0f} s") from None
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise LoadError(f"vllm bench serve at concurrency {concurrency} exited {proc.returncode}; "
                        f"last lines of {log}:\n{tail}")
    data: dict[str, object] = json.loads(out.read_text())
    return data
