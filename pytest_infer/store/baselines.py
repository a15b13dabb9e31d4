"""Baselines: a stack's stored sweep (every repeat of every level, not a mean) and the environment it was
measured in, as reviewable YAML in the repository: `<baseline-dir>/<gpu>/<engine>/<model>/<stack>.yaml`,
one level per line so a re-recorded baseline reads as a diff.

`--baseline-update` writes them (atomically, under a file lock: safe under xdist); the regression suite
compares a fresh measurement with them (analysis/checks.regression).
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from filelock import FileLock
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict

from pytest_infer.files import write_whole
from pytest_infer.matrix import Workload
from pytest_infer.store.records import Measurement
from pytest_infer.yamlfile import parse_model

HEADER = ("# pytest-infer baseline: one stack's sweep, every repeat of every level, and where it was measured.\n"
          "# Written by `pytest --suite regression --baseline-update`; review it like code.\n")


class BaselineError(ValueError):
    """A baseline file that cannot be used: one line naming the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fingerprint(_Strict):
    """The environment a measurement belongs to. engine_version, device, workload and model must match
    for a comparison (a dev build of the same release counts as the same: a PR against its merge base);
    plugin_version is only noted."""

    engine: str
    engine_version: str
    device: str  # GPU name and driver, or "cpu: <model> x<cores>" (launch/gpus.device_fingerprint)
    plugin_version: str
    workload: str  # hash of Workload.load_identity (lengths, levels, prompts; not repeats)
    model: str  # the model's fingerprint (a built model: hash of its files; else its name)


class BaselineLevel(_Strict):
    repeat: int
    concurrency: int
    interactivity: float  # tok/s/user
    per_gpu_throughput: float  # tok/s/GPU
    output_throughput: float
    median_ttft_ms: float
    median_tpot_ms: float
    p99_ttft_ms: float
    completed: int
    duration_s: float


class Baseline(_Strict):
    format: Literal[1] = 1
    stack: str
    gpu: str
    model: str
    gpus: int
    decode_gpus: int
    written: str  # UTC, ISO 8601
    run_id: str
    key: str  # the measurement key at the time: a different key means different flags or versions
    fingerprint: Fingerprint
    workload: Workload
    argv: dict[str, list[str]]
    levels: list[BaselineLevel]


def plugin_version() -> str:
    try:
        return importlib.metadata.version("pytest-infer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def workload_hash(w: Workload) -> str:
    return hashlib.sha256(json.dumps(w.load_identity(), sort_keys=True).encode()).hexdigest()[:12]


def fingerprint_of(m: Measurement) -> Fingerprint:
    return Fingerprint(engine=m.engine, engine_version=m.engine_version, device=m.device or "unknown",
                       plugin_version=plugin_version(), workload=workload_hash(m.workload),
                       model=m.model_fingerprint or m.model)


def path_for(root: Path, gpu: str, engine: str, model: str, label: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._+-]", "--", model)  # hub ids and paths: one directory level
    return root / gpu / engine / safe / f"{label}.yaml"


def from_measurement(m: Measurement, run_id: str) -> Baseline:
    return Baseline(
        stack=m.stack, gpu=m.gpu, model=m.model, gpus=m.gpus, decode_gpus=m.decode_gpus,
        written=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), run_id=run_id, key=m.key,
        fingerprint=fingerprint_of(m), workload=m.workload, argv=m.argv,
        levels=[BaselineLevel(repeat=lv.repeat, concurrency=lv.concurrency, interactivity=lv.interactivity,
                              per_gpu_throughput=lv.per_gpu_throughput, output_throughput=lv.output_throughput,
                              median_ttft_ms=lv.median_ttft_ms, median_tpot_ms=lv.median_tpot_ms,
                              p99_ttft_ms=lv.p99_ttft_ms, completed=lv.completed, duration_s=lv.duration_s)
                for lv in sorted(m.levels, key=lambda lv: (lv.repeat, lv.concurrency))])


def dumps(b: Baseline) -> str:
    """YAML with the levels one per line (JSON flow mappings are YAML)."""
    head = b.model_dump(exclude={"levels"})
    text = HEADER + yaml.safe_dump(head, sort_keys=False, default_flow_style=None, width=120)
    return text + "levels:\n" + "".join(f"- {json.dumps(lv.model_dump())}\n" for lv in b.levels)


def write(path: Path, b: Baseline) -> Path:
    """Atomic (a reader never sees half a file) and locked (two writers of one file take turns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        return write_whole(path, dumps(b))


def load(path: Path) -> Baseline | None:
    """The baseline at `path`, None when there is none; BaselineError (one line) when it is broken."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_model(path, text, Baseline, BaselineError, "field")


def compare_environments(base: Fingerprint, run: Fingerprint) -> tuple[list[str], list[str]]:
    """(differences that make the comparison meaningless, differences only worth a note)."""
    blocking, notes = [], []
    if base.engine != run.engine:
        blocking.append(f"engine {base.engine} vs {run.engine}")
    if _release(base.engine_version) != _release(run.engine_version):
        blocking.append(f"engine version {base.engine_version} vs {run.engine_version}")
    elif base.engine_version != run.engine_version:
        notes.append(f"engine build {base.engine_version} vs {run.engine_version} (same release: compared)")
    if base.device != run.device:
        if "unknown" in (base.device, run.device):
            notes.append(f"device {base.device} vs {run.device}")
        else:
            blocking.append(f"device {base.device!r} vs {run.device!r}")
    if base.workload != run.workload:
        blocking.append(f"workload {base.workload} vs {run.workload} (lengths, levels or prompts changed)")
    if base.model != run.model:
        blocking.append(f"model fingerprint {base.model} vs {run.model}")
    if base.plugin_version != run.plugin_version:
        notes.append(f"pytest-infer {base.plugin_version} vs {run.plugin_version}")
    return blocking, notes


def _release(version: str) -> str:
    try:
        return Version(version).base_version  # 0.32.1.dev12+g1234 -> 0.32.1
    except InvalidVersion:
        return version


_PATH = re.compile(r"/[^\s\",']+")


def flag_changes(base: dict[str, list[str]], run: dict[str, list[str]]) -> list[str]:
    """What a run's command lines add or drop against the baseline's (paths aside: they name the machine)."""
    out: list[str] = []
    for role in sorted(set(base) | set(run)):
        a = [_PATH.sub("<path>", t) for t in base.get(role, [])]
        b = [_PATH.sub("<path>", t) for t in run.get(role, [])]
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
            if op == "equal":
                continue
            change = " ".join(filter(None, [f"-{' '.join(a[i1:i2])}" if i2 > i1 else "",
                                            f"+{' '.join(b[j1:j2])}" if j2 > j1 else ""]))
            out.append(f"{role}: {change}")
    return out
