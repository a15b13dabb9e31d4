"""The command line: declared here, read once into `Options`.

The plugin loads in every pytest session of an environment where it is installed, so its options carry
the `--infer-` prefix (pytest-benchmark's `--benchmark-`, syrupy's `--snapshot-`) and cannot clash with a
user's conftest. `--gpu` and `--suite` are how users call it and stay as they are. The spellings used
before the prefix (`--model`, `--engine`, `--stack`, `--results`, `--report-dir`, `--baseline-*`) keep
working, but only where nothing else defines them: they are added after the initial conftests, and a
name a conftest or another plugin took stays theirs.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_infer.suite import REGISTRY

if TYPE_CHECKING:
    from pytest_infer.launch.slurm import SlurmSettings

SUITES = tuple(REGISTRY)

# new spelling -> the one it had before the prefix
LEGACY = {
    "--infer-engine": "--engine", "--infer-model": "--model", "--infer-stack": "--stack",
    "--infer-report-dir": "--report-dir", "--infer-results": "--results",
    "--infer-baseline-dir": "--baseline-dir", "--infer-baseline-update": "--baseline-update",
    "--infer-baseline-strict": "--baseline-strict", "--infer-launcher": "--launcher",
}
GROUP = "infer"


def _declare() -> dict[str, dict[str, Any]]:
    """Every option's argparse keywords by its --infer- name (the legacy spellings reuse them)."""
    return {
        "--infer-engine": {"metavar": "NAME", "action": "append", "default": [],
                               "help": "engine (repeatable); default: every engine the matrix supports on the GPU"},
        "--infer-model": {"metavar": "NAME", "help": "model from matrices/models.yaml, or a checkpoint path or id"},
        "--infer-stack": {"metavar": "EXPR", "action": "append", "default": [],
                              "help": "narrow to stacks: a label (fp4+mtp, base) or an expression (mtp and not "
                                   "disagg); repeatable"},
        "--infer-report-dir": {"metavar": "DIR", "help": "where matrices, plots, JUnit and results go (default: "
                                   "reports/)"},
        "--infer-results": {"metavar": "DIR", "help": "replay, no engine: run the checks on a results store, or on "
                                "InferenceX / vllm bench / SGLang result files under DIR (raw ones need an "
                                "infer-results.yaml)"},
        "--infer-baseline-dir": {"metavar": "DIR", "help": "regression suite: where baselines live (default: "
                                     "baselines/ in the rootdir)"},
        "--infer-baseline-update": {"action": "store_true", "help": "regression suite: measure and (re)write the "
                                        "baselines instead of comparing"},
        "--infer-baseline-strict": {"action": "store_true", "help": "regression suite: a missing baseline or one from "
                                        "another environment fails (default: skip)"},
        "--infer-launcher": {"metavar": "{local,slurm}", "help": "where deployments run: local processes (default), or "
                                 "one Slurm job each (sbatch; --infer-slurm-* options)"},
    }


def add_options(parser: pytest.Parser) -> None:
    g = parser.getgroup(GROUP, "pytest-infer: do inference optimizations still win when stacked?")
    g.addoption("--gpu", metavar="KIND", help="GPU kind to test (matrices/gpus.yaml), or cpu for the real "
                "vLLM CPU engine with the repo's tiny model. Turns the plugin on.")
    # The suites are listed from the registry, but checked in Options: argparse's choices= answers a bad
    # name with four lines (usage, error, inifile, rootdir), every other bad input here with one.
    g.addoption("--suite", metavar="{" + ",".join(SUITES) + "}", help="suite to run (default: composability)")
    for name, kwargs in _declare().items():
        g.addoption(name, **kwargs)
    g.addoption("--infer-plan", action="store_true",
                help="launch nothing: print every role's argv and env, and write <report-dir>/<gpu>/plan.json")
    g.addoption("--infer-matrices", metavar="DIR",
                help="use this matrices/ directory instead of the shipped one (your own GPUs, engines, optimizations)")
    g.addoption("--infer-fresh", action="store_true", help="measure again even if results are stored")
    g.addoption("--infer-engine-args", metavar="ARGS",
                help="flags appended to every serving role, e.g. '--max-num-seqs 4' (part of what is measured)")
    g.addoption("--infer-repeats", metavar="N", type=int,
                help="sweeps per deployment, overriding the workload's repeats (an inconclusive verdict says "
                     "how many would decide it); stored sweeps are kept and only the missing ones measured")
    g.addoption("--infer-devices", metavar="IDS",
                help="device ids to lease deployments from (default: CUDA/HIP/ROCR_VISIBLE_DEVICES, else all "
                     "detected; the cores on cpu)")
    g.addoption("--infer-lease-dir", metavar="DIR",
                help="where the per-device lease locks live (default: one directory per user in the temp dir)")
    g.addoption("--infer-launch-timeout", metavar="S", type=float, default=900.0,
                help="seconds a deployment may take to become healthy (default 900; on Slurm from when its job runs)")
    for name, what in (("partition", "partition"), ("account", "account"), ("qos", "QoS"),
                       ("reservation", "reservation")):
        g.addoption(f"--infer-slurm-{name}", metavar=name.upper(), help=f"--launcher slurm: the jobs' {what}")
    g.addoption("--infer-slurm-time", metavar="LIMIT", default="04:00:00",
                help="--launcher slurm: each job's time limit (default 04:00:00): a pytest killed with SIGKILL "
                     "leaves a job that ends by it, and the next run cancels it")
    g.addoption("--infer-slurm-args", metavar="ARGS",
                help="--launcher slurm: more sbatch arguments, e.g. '--exclusive'")
    g.addoption("--infer-slurm-output", metavar="DIR", help="--launcher slurm: where each job's own output goes "
                "(default: the stack's runs/ folder, beside the role logs)")
    g.addoption("--infer-slurm-queue-timeout", metavar="S", type=float, default=3600.0,
                help="--launcher slurm: seconds a job may wait in the queue before its launch fails (default 3600)")


def add_legacy_spellings(parser: pytest.Parser) -> None:
    """The pre-prefix spellings, each where no conftest or plugin defines the same name. Called once the
    initial conftests have added their options."""
    taken = {name for opt in _all_options(parser) for name in opt.names()}
    g = parser.getgroup(GROUP)
    for new, kwargs in _declare().items():
        old = LEGACY[new]
        if old not in taken:
            g.addoption(old, dest=_legacy_dest(old), **{**kwargs, "help": f"the same as {new}"})


def _all_options(parser: pytest.Parser) -> list[Any]:
    # pytest has no public list of the options declared so far; these two attributes have held them
    # since pytest 3 (a name missed here would only surface as argparse's own "conflicting option").
    groups = [parser._anonymous, *parser._groups]
    return [opt for group in groups for opt in group.options]


def _slurm(config: pytest.Config, path: Callable[[str], Path | None]) -> SlurmSettings:
    from pytest_infer.launch.slurm import SlurmSettings

    text = config.getoption("infer_slurm_args") or ""
    try:
        extra = tuple(shlex.split(text))
    except ValueError as exc:
        raise pytest.UsageError(f"pytest-infer: --infer-slurm-args {text!r}: {exc}") from None
    if any(not a.startswith("-") for a in extra[:1]):
        raise pytest.UsageError(f"pytest-infer: --infer-slurm-args {text!r}: sbatch arguments start with a flag")
    queue = float(config.getoption("infer_slurm_queue_timeout"))
    if queue <= 0:
        raise pytest.UsageError(f"pytest-infer: --infer-slurm-queue-timeout {queue:g}: must be positive")
    return SlurmSettings(partition=config.getoption("infer_slurm_partition"),
                         account=config.getoption("infer_slurm_account"), qos=config.getoption("infer_slurm_qos"),
                         reservation=config.getoption("infer_slurm_reservation"),
                         time=str(config.getoption("infer_slurm_time")), extra=extra,
                         output=path("--infer-slurm-output"), queue_timeout_s=queue)


def _legacy_dest(old: str) -> str:
    return "infer_legacy_" + old.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Options:
    """What the user asked for, read once from the command line. Checked against the matrices in Run."""

    gpu: str | None
    suite: str | None
    engines: tuple[str, ...]
    model: str | None
    stacks: tuple[str, ...]
    report_root: Path
    results: Path | None
    plan: bool
    matrices: Path | None
    fresh: bool
    engine_args: str | None
    repeats: int | None
    devices: str | None
    lease_dir: Path | None
    launch_timeout_s: float
    baseline_dir: Path  # default: baselines/ in the rootdir
    baseline_update: bool
    baseline_strict: bool
    xdist_worker: bool
    run_id: str | None  # the controller's, on an xdist worker
    rootpath: Path
    launcher: str = "local"
    slurm: SlurmSettings | None = None  # --launcher slurm

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        def get(new: str) -> Any:
            value = config.getoption(new.lstrip("-").replace("-", "_"))
            old = LEGACY.get(new)
            legacy = getattr(config.option, _legacy_dest(old), None) if old else None
            if isinstance(value, list):
                return (*value, *(legacy or []))
            return value if value not in (None, False) or legacy is None else legacy

        def path(new: str) -> Path | None:
            value = get(new)
            return Path(value).resolve() if value else None

        suite = config.getoption("suite")
        if suite is not None and suite not in SUITES:
            raise pytest.UsageError(f"pytest-infer: unknown suite {suite!r}; valid: {', '.join(SUITES)}")
        workerinput = getattr(config, "workerinput", None)
        launcher = get("--infer-launcher") or "local"
        if launcher not in ("local", "slurm"):
            raise pytest.UsageError(f"pytest-infer: --infer-launcher {launcher!r}: valid: local, slurm")
        return cls(
            launcher=launcher, slurm=_slurm(config, path) if launcher == "slurm" else None,
            gpu=config.getoption("gpu"), suite=suite, engines=get("--infer-engine"),
            model=get("--infer-model"), stacks=get("--infer-stack"),
            report_root=Path(get("--infer-report-dir") or "reports").resolve(), results=path("--infer-results"),
            plan=bool(config.getoption("infer_plan")), matrices=path("--infer-matrices"),
            fresh=bool(config.getoption("infer_fresh")), engine_args=config.getoption("infer_engine_args"),
            repeats=config.getoption("infer_repeats"), devices=config.getoption("infer_devices"),
            lease_dir=path("--infer-lease-dir"), launch_timeout_s=float(config.getoption("infer_launch_timeout")),
            baseline_dir=path("--infer-baseline-dir") or config.rootpath / "baselines",
            baseline_update=bool(get("--infer-baseline-update")),
            baseline_strict=bool(get("--infer-baseline-strict")), xdist_worker=workerinput is not None,
            run_id=str(workerinput["testrunuid"]) if workerinput else None, rootpath=config.rootpath)

    def relative(self, path: Path) -> str:
        """A path as the user would type it from the rootdir (absolute outside it)."""
        try:
            return str(path.relative_to(self.rootpath))
        except ValueError:
            return str(path)
