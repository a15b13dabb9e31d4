"""Where a run writes each file: the one place the runner, accuracy, the plan and the reports ask.

    <report-dir>/models/<model>/            models the repo builds (shared by every GPU kind)
    <report-dir>/<gpu>/<suite>.md, junit-<suite>.xml, <suite>-<engine>.png, plan.json, launches.log
    <report-dir>/<gpu>/results/             the results store (one JSON per deployment); results/accuracy/
    <report-dir>/<gpu>/runs/<stack>/        logs/, bench/, accuracy/{logs,lm-eval}, smoke/logs, kv/
    <report-dir>/<gpu>/tasks/               lm-eval task files the run writes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path  # <report-dir>, resolved
    gpu: str

    @property
    def report_dir(self) -> Path:
        return self.root / self.gpu

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    # ---- the store --------------------------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.report_dir / "results"

    @property
    def accuracy_results(self) -> Path:
        return self.results / "accuracy"

    @staticmethod
    def lm_eval_cache(accuracy_store: Path, stack_id: str, key: str) -> Path:
        """lm-eval's request cache of one deployment, beside its record (survives an interrupted run)."""
        return accuracy_store / f"{stack_id}-{key}.lmcache"

    @property
    def replayed(self) -> Path:
        """Foreign result files ingested as a store (--results of InferenceX / vllm bench JSON)."""
        return self.report_dir / "replayed"

    # ---- per deployment ---------------------------------------------------------------------------
    def run_dir(self, stack_id: str, phase: str = "") -> Path:
        """Working directory of one launch: the sweep (phase ""), "accuracy" or "smoke"."""
        d = self.report_dir / "runs" / stack_id
        return d / phase if phase else d

    def logs(self, stack_id: str, phase: str = "") -> Path:
        return self.run_dir(stack_id, phase) / "logs"

    def bench_result(self, stack_id: str, concurrency: int, repeat: int) -> Path:
        return self.run_dir(stack_id) / "bench" / f"conc{concurrency}-r{repeat}.json"

    def lm_eval_output(self, stack_id: str) -> Path:
        return self.run_dir(stack_id, "accuracy") / "lm-eval"

    def lm_eval_log(self, stack_id: str) -> Path:
        return self.run_dir(stack_id, "accuracy") / "lm-eval.log"

    # ---- the run ----------------------------------------------------------------------------------
    @property
    def tasks(self) -> Path:
        return self.report_dir / "tasks"

    @property
    def launches_log(self) -> Path:
        return self.report_dir / "launches.log"

    @property
    def bench_worker(self) -> Path:
        return self.report_dir / "bench-worker"

    @property
    def plan(self) -> Path:
        return self.report_dir / "plan.json"

    def matrix(self, suite: str) -> Path:
        return self.report_dir / f"{suite}.md"

    def junit(self, suite: str) -> Path:
        return self.report_dir / f"junit-{suite}.xml"

    def plot(self, suite: str, engine: str) -> Path:
        return self.report_dir / f"{suite}-{engine}.png"
