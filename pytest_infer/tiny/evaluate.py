"""The trained tiny model on the real vLLM CPU engine: exact match on ``arith`` test problems and MTP
acceptance (from the engine's own /metrics counters) on arithmetic and on ``vllm bench serve`` random
prompts.

    python -m pytest_infer.tiny.evaluate MODEL_DIR [--problems 500] [--mtp] [--bench-prompts 64]

Prints one JSON object. The server is launched like the plugin launches the cpu stacks (the engine
flags and env of matrices/engines/vllm.yaml for cpu: bf16, eager, pinned to one core).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pytest_infer.deployment import Deployment, Role
from pytest_infer.launch.local import LocalLauncher, free_ports
from pytest_infer.measure.metrics import parse
from pytest_infer.tiny import arith

SERVED = "tiny"
MTP_CONFIG = '{"method":"mtp","num_speculative_tokens":1}'
ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
DRAFTED = "vllm:spec_decode_num_draft_tokens_total"


@dataclass
class Server:
    url: str
    model_dir: Path

    def metrics(self) -> dict[str, float]:
        return parse(httpx.get(f"{self.url}/metrics", timeout=30).text)

    def complete(self, prompts: list[str], max_tokens: int = 6, chunk: int = 64) -> list[str]:
        """Greedy completions, stopping at the task's stop string; a few prompts per request."""
        out: list[str] = []
        with httpx.Client(timeout=600) as client:
            for i in range(0, len(prompts), chunk):
                part = prompts[i : i + chunk]
                r = client.post(f"{self.url}/v1/completions", json={
                    "model": SERVED, "prompt": part, "max_tokens": max_tokens, "temperature": 0,
                    "stop": [arith.STOP]})
                r.raise_for_status()
                choices = sorted(r.json()["choices"], key=lambda c: c["index"])
                out += [c["text"] for c in choices]
        return out


@contextmanager
def serve(model_dir: Path, log_dir: Path, *, mtp: bool, core: str = "0") -> Iterator[Server]:
    """`vllm serve` the model on one pinned core, as the plugin does for cpu; always torn down."""
    port = free_ports(1)[0]
    argv = ["vllm", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", SERVED, "--max-model-len", "512", "--no-enable-prefix-caching",
            "--dtype", "bfloat16", "--enforce-eager"]
    if mtp:
        argv += ["--speculative-config", MTP_CONFIG]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": core}
    role = Role(name="server", kind="server", argv=argv, env=env, gpus=1, host="127.0.0.1", port=port)
    dep = Deployment(stack="tinyeval", engine="vllm", gpu="cpu", model=str(model_dir), served_name=SERVED,
                     roles=[role], endpoint="server", nodes=1)
    with LocalLauncher(dep, log_dir, timeout=600):
        yield Server(url=f"http://127.0.0.1:{port}", model_dir=model_dir)


def acceptance(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    """(accepted, drafted) tokens between two /metrics reads."""
    return after.get(ACCEPTED, 0.0) - before.get(ACCEPTED, 0.0), after.get(DRAFTED, 0.0) - before.get(DRAFTED, 0.0)


def arithmetic(server: Server, n: int) -> dict[str, Any]:
    problems = arith.problems("test", n)
    before = server.metrics()
    texts = server.complete([p.prompt for p in problems])
    acc, drafted = acceptance(before, server.metrics())
    correct = sum(arith.is_correct(p, t) for p, t in zip(problems, texts, strict=True))
    return {"problems": n, "exact_match": correct / n, "accepted": acc, "drafted": drafted,
            "acceptance": acc / drafted if drafted else None, "texts": texts}


def runs(server: Server, n: int, temperature: float = 1.0, length: int = 128, seed: int = 0) -> dict[str, Any]:
    """Prompts shaped like `vllm bench serve` random ones (runs of consecutive non-special ids from a
    random offset), 64 tokens each with ignore_eos, at the suite's temperature; MTP acceptance."""
    rng = random.Random(seed)
    first, vocab = 4, 128  # pad/bos/eos/unk are the tokenizer's special ids
    prompts = []
    for _ in range(n):
        off = rng.randrange(vocab - first)
        prompts.append([first + (off + i) % (vocab - first) for i in range(length)])
    before = server.metrics()
    with httpx.Client(timeout=600) as client:
        r = client.post(f"{server.url}/v1/completions", json={
            "model": SERVED, "prompt": prompts, "max_tokens": 64, "temperature": temperature,
            "ignore_eos": True, "seed": seed})
        r.raise_for_status()
    acc, drafted = acceptance(before, server.metrics())
    return {"prompts": n, "temperature": temperature, "accepted": acc, "drafted": drafted,
            "acceptance": acc / drafted if drafted else None}


def bench_random(server: Server, prompts: int, log_dir: Path, temperature: float | None = None) -> dict[str, Any]:
    """`vllm bench serve` random prompts (input 128, output 64, ignore_eos), as the throughput suite.

    The suite passes no --temperature, so requests get the server's default (1.0 here: the model's
    generation_config sets none) and MTP acceptance is E[p_target(greedy draft)]; 0 measures greedy."""
    vllm = Path(sys.executable).with_name("vllm")
    argv = [str(vllm), "bench", "serve", "--backend", "vllm", "--base-url", server.url, "--model", SERVED,
            "--tokenizer", str(server.model_dir), "--dataset-name", "random", "--random-input-len", "128",
            "--random-output-len", "64", "--random-range-ratio", "0.8", "--ignore-eos",
            "--num-prompts", str(prompts), "--max-concurrency", "16", "--seed", "0",
            "--save-result", "--result-dir", str(log_dir), "--result-filename", "bench.json"]
    if temperature is not None:
        argv += ["--temperature", str(temperature)]
    before = server.metrics()
    with (log_dir / "bench.log").open("wb") as log:
        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=900)
    acc, drafted = acceptance(before, server.metrics())
    result = json.loads((log_dir / "bench.json").read_text())
    return {"prompts": prompts, "temperature": temperature, "completed": result.get("completed"),
            "accepted": acc, "drafted": drafted,
            "acceptance": acc / drafted if drafted else None,
            "output_throughput": result.get("output_throughput")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--mtp", action="store_true", help="serve with MTP speculative decoding (1 token)")
    ap.add_argument("--bench-prompts", type=int, default=0, help="also run vllm bench serve random prompts")
    ap.add_argument("--texts", type=Path, help="write the completions here (JSON list)")
    args = ap.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="tinyeval-"))
    with serve(args.model_dir, log_dir, mtp=args.mtp) as server:
        res: dict[str, Any] = {"mtp": args.mtp, "arith": arithmetic(server, args.problems)}
        if args.bench_prompts:
            res["random"] = bench_random(server, args.bench_prompts, log_dir)
            res["random_greedy"] = bench_random(server, args.bench_prompts, log_dir, temperature=0.0)
    texts = res["arith"].pop("texts")
    if args.texts:
        args.texts.write_text(json.dumps(texts))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
