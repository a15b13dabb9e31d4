"""accuracy(stack): launch the deployment once, run lm-eval against its front door and a fixed set of greedy
prompts, keep the per-sample outcomes and the greedy outputs on disk.

Memoized like throughput measurements (keyed by the deployment, engine version, model and task), under
<results>/accuracy/. lm-eval runs as its own CLI in a subprocess (its whole process group is killed on
the way out) with `--use_cache`, so an interrupted run re-asks only the documents it had not answered.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx
from pydantic import Field

from pytest_infer.accuracy.lmeval import Task, task_hash
from pytest_infer.launch.local import LaunchError
from pytest_infer.measure.metrics import Scraper, acceptance_rate
from pytest_infer.measure.runner import MeasurementFailed, _server_tails, first_completion, root_causes
from pytest_infer.space import Stack
from pytest_infer.store.records import Record
from pytest_infer.store.store import RecordStore

if TYPE_CHECKING:
    from pytest_infer.deployment import Deployment
    from pytest_infer.launch.base import Launcher
    from pytest_infer.measure.runner import Runner

class AccuracyResult(Record):
    """One deployment's accuracy run: per-sample outcomes (doc id -> 1 right / 0 wrong), the responses,
    the greedy outputs on the parity prompts, and the engine metrics scraped around it."""

    task: str
    status: Literal["running", "ok", "failed"] = "running"
    error: str = ""
    run_id: str = ""
    score: float | None = None
    stderr: float | None = None
    n: int = 0
    samples: dict[str, int] = Field(default_factory=dict)
    responses: dict[str, str] = Field(default_factory=dict)
    greedy: dict[str, str] = Field(default_factory=dict)
    argv: list[str] = Field(default_factory=list)
    launch_s: float = 0.0
    eval_s: float = 0.0
    greedy_s: float = 0.0
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    source: str = ""  # replayed rows: where the numbers come from
    note: str = ""

    @property
    def paired(self) -> bool:
        return bool(self.samples)

    @property
    def mtp_acceptance(self) -> float | None:
        got = acceptance_rate(self.metrics)
        return got[0] / got[1] if got else None


class AccuracyStore(RecordStore[AccuracyResult]):
    schema = AccuracyResult


def greedy_outputs(url: str, served_name: str, prompts: list[str], max_tokens: int,
                   concurrency: int = 8, timeout_s: float = 300) -> dict[str, str]:
    """prompt -> greedy completion (temperature 0, fixed length: no stop, so more tokens can diverge)."""
    with httpx.Client(timeout=timeout_s) as client:
        def one(prompt: str) -> str:
            resp = client.post(f"{url}/v1/completions", json={
                "model": served_name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "seed": 0})
            if resp.status_code != 200:
                raise RuntimeError(f"POST /v1/completions answered {resp.status_code}: {resp.text[:300]}")
            return str((resp.json().get("choices") or [{}])[0].get("text", ""))

        with ThreadPoolExecutor(concurrency) as pool:
            return dict(zip(prompts, pool.map(one, prompts), strict=True))


def read_samples(output: Path, task: str) -> tuple[dict[str, int], dict[str, str], str]:
    """(doc id -> 0/1, doc id -> response, metric) from lm-eval's samples_<task>_*.jsonl. With several
    filters the strict one counts (InferenceX reports em_strict), else the first."""
    files = sorted(output.rglob(f"samples_{task}_*.jsonl"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ValueError(f"{output}: lm-eval wrote no samples_{task}_*.jsonl (was --log_samples passed?)")
    rows = [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{files[-1]}: no samples")
    filters = list(dict.fromkeys(str(r.get("filter", "")) for r in rows))
    chosen = "strict-match" if "strict-match" in filters else filters[0]
    samples, responses = {}, {}
    metric = ""
    for r in rows:
        if str(r.get("filter", "")) != chosen:
            continue
        metric = next((m for m in ("exact_match", "acc") if m in r), "")
        if not metric:
            raise ValueError(f"{files[-1]}: doc {r.get('doc_id')}: no exact_match or acc field")
        doc = str(r["doc_id"])
        samples[doc] = 1 if float(r[metric]) >= 1.0 else 0
        resp = r.get("filtered_resps") or r.get("resps") or [""]
        while isinstance(resp, list) and resp:
            resp = resp[0]
        responses[doc] = str(resp) if resp else ""
    return samples, responses, f"{metric},{chosen}"


def score_of(samples: dict[str, int]) -> tuple[float, float | None]:
    """Mean and its standard error, as lm-eval computes them (sample stdev / sqrt(n))."""
    xs = list(samples.values())
    mean = sum(xs) / len(xs)
    return mean, (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else None)


@dataclass
class AccuracyRunner:
    runner: Runner  # the throughput runner: plans, ports, launch timeout, paths, logging
    task: Task
    store: AccuracyStore
    replay: bool = False
    fresh: bool = False
    log: Callable[[str], None] = print
    _cache: dict[str, AccuracyResult] = field(default_factory=dict)
    _task_file: Path | None = None
    _task_hash: str = ""

    def _task(self) -> tuple[Path | None, str]:
        if not self._task_hash:
            self._task_file = None if self.replay else self.task.write(self.runner.paths.tasks)
            self._task_hash = task_hash(self.task.spec, self._task_file)
        return self._task_file, self._task_hash

    def task_file(self) -> Path | None:
        return self._task()[0]

    def key(self, stack: Stack) -> str:
        r = self.runner
        blob = json.dumps({"deployment": r.plan(stack).fingerprint(), "engine_version": r.engine_version,
                           "model": r.model_fingerprint, "task": self._task()[1]}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def accuracy(self, stack: Stack) -> AccuracyResult:
        """The stack's accuracy run; raises MeasurementFailed (cached for the session) when it cannot run."""
        if stack.id not in self._cache:
            self._cache[stack.id] = self._accuracy(stack)
        got = self._cache[stack.id]
        if got.status != "ok":
            raise MeasurementFailed(got.error)
        return got

    def _failed(self, stack: Stack, key: str, error: str) -> AccuracyResult:
        return AccuracyResult(key=key, stack=stack.id, engine=stack.engine, engine_version=self.runner.engine_version,
                              gpu=stack.gpu, model=self.runner.model, task=self.task.spec.task, status="failed",
                              error=error)

    def _accuracy(self, stack: Stack) -> AccuracyResult:
        if self.replay:
            got = self.store.find(stack.id)
            return got or self._failed(stack, "", f"no stored accuracy result for {stack.id} in {self.store.root}")
        key = self.key(stack)
        with self.store.lock(stack.id, key):
            got = self.store.load(stack.id, key)
            run_id = self.runner.run_id
            if got is not None and run_id and got.run_id == run_id and got.status != "running":
                return got  # another xdist worker of this session ran it (or failed to): never twice
            if got is not None and got.status == "ok" and not self.fresh:
                self.log(f"[infer] {stack.id}: reusing stored accuracy {self.store.path(stack.id, key)}")
                return got
            return self._launch_and_evaluate(stack, key)

    def _launch_and_evaluate(self, stack: Stack, key: str) -> AccuracyResult:
        paths = self.runner.paths
        run_dir = paths.run_dir(stack.id, "accuracy")
        try:
            dep = self.runner.launchable(stack, run_dir)
        except MeasurementFailed as exc:
            return self._failed(stack, key, str(exc))
        result = AccuracyResult(key=key, stack=stack.id, engine=stack.engine, engine_version=self.runner.engine_version,
                                gpu=stack.gpu, model=self.runner.model, task=self.task.spec.task,
                                run_id=self.runner.run_id)
        self.store.save(result)
        self.runner._note_launch(stack)
        self.log(f"[infer] {stack.id}: launching {', '.join(r.name for r in dep.roles)} "
                 f"for accuracy, logs in {run_dir}")
        launcher = self.runner.launcher(stack, dep, paths.logs(stack.id, "accuracy"))
        t0 = time.monotonic()
        try:
            with launcher:
                result.launch_s = time.monotonic() - t0
                self._evaluate(stack, launcher.deployment, launcher, result)
            result.status = "ok"
            accept = result.mtp_acceptance
            self.log(f"[infer] {stack.id}: {self.task.spec.task} {result.score:.4f} (n={result.n}) "
                     f"in {result.eval_s:.0f} s, "
                     f"{len(result.greedy)} greedy outputs in {result.greedy_s:.0f} s"
                     + (f", MTP acceptance {accept:.2f}" if accept is not None else ""))
        except (LaunchError, MeasurementFailed) as exc:
            causes = root_causes(paths.logs(stack.id, "accuracy"))
            result.status, result.error = "failed", (f"root cause: {causes}\n" if causes else "") + str(exc)
        except (RuntimeError, OSError, ValueError, httpx.HTTPError) as exc:
            tails = _server_tails(launcher, launcher.deployment)
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}\n{tails}"
        self.store.save(result)
        return result

    def _evaluate(self, stack: Stack, dep: Deployment, launcher: Launcher, result: AccuracyResult) -> None:
        task_file, _ = self._task()
        # One request first: a deployment that answers errors fails here with its log, where lm-eval would
        # retry every request with backoff before giving up.
        first_completion(launcher, dep, max_tokens=1, what="first request, before lm-eval: ")
        paths, spec = self.runner.paths, self.task.spec
        output, log = paths.lm_eval_output(stack.id), paths.lm_eval_log(stack.id)
        cache = paths.lm_eval_cache(self.store.root, stack.id, result.key)
        if self.fresh:  # asked to measure again: lm-eval must not answer from its cache either
            for old in self.store.root.glob(f"{cache.name}*"):
                old.unlink()
        argv = self.task.argv(dep.endpoint_url, dep.served_name, output, cache, task_file)
        result.argv = argv
        t0 = time.monotonic()
        # Engine metrics (MTP acceptance among them) over the task's own requests only: the fixed-length
        # greedy prompts below run past the answer, where a drafter is not meant to agree.
        scraped = {r.name: r.url for r in dep.roles if r.port is not None and r.kind != "router"}
        with Scraper(scraped) as scraper:
            rc, tail = run_lm_eval(argv, log, timeout_s=max(600.0, self.runner.launch_timeout_s))
        result.metrics = scraper.result
        result.eval_s = time.monotonic() - t0
        if rc != 0:
            launcher.check_alive()
            raise MeasurementFailed(f"lm-eval exited with {rc} ({log}):\n{tail}\n"
                                    f"{_server_tails(launcher, dep)}")
        result.samples, result.responses, _ = read_samples(output, spec.task)
        result.score, result.stderr = score_of(result.samples)
        result.n = len(result.samples)
        t0 = time.monotonic()
        result.greedy = greedy_outputs(dep.endpoint_url, dep.served_name, self.task.parity_prompts(),
                                       spec.parity_max_tokens)
        result.greedy_s = time.monotonic() - t0
        launcher.check_alive()


def run_lm_eval(argv: list[str], log: Path, timeout_s: float) -> tuple[int, str]:
    """`python -m lm_eval ARGV` offline (no hub), in its own process group; (exit code, log tail)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "EMPTY")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lm_eval", *argv], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = -1
        finally:
            if proc.poll() is None:  # timeout or Ctrl-C: nothing of lm-eval outlives us
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    lines = log.read_text(errors="replace").splitlines()
    return rc, "\n".join(lines[-15:]) + ("\n(timed out)" if rc == -1 else "")
