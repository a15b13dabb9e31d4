"""The command line: declared here, read once into `Options`.

The plugin loads in every pytest session of an environment where it is installed, so its options carry
the `--infer-` prefix (pytest-benchmark's `--benchmark-`, syrupy's `--snapshot-`) and cannot clash with a
user's conftest. `--gpu` and `--suite` are how users call it and stay as they are. The spellings used
before the prefix (`--model`, `--engine`, `--stack`, `--results`, `--report-dir`, `--baseline-*`) keep
working, but only where nothing else defines them: they are added after the initial conftests, and a
name a conftest or another plugin took stays theirs.
"""

from __future__ import annotations

import re
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
    g.addoption("--infer-history", metavar="DIR",
                help="where every run (and every dated --infer-results replay) is appended, for trends.md and "
                     "compatibility.md (default: <report-dir>/history; point nightly runs at one kept place)")
    g.addoption("--infer-engine-args", metavar="ARGS",
                help="flags appended to every serving role, e.g. '--max-num-seqs 4' (part of what is measured)")
    # Numbers are read as text and checked in Options: argparse's type= answers with four lines.
    g.addoption("--infer-repeats", metavar="N",
                help="sweeps per deployment, overriding the workload's repeats (an inconclusive verdict says "
                     "how many would decide it); stored sweeps are kept and only the missing ones measured")
    g.addoption("--infer-devices", metavar="IDS",
                help="device ids to lease deployments from (default: CUDA/HIP/ROCR_VISIBLE_DEVICES, else all "
                     "detected; the cores on cpu)")
    g.addoption("--infer-lease-dir", metavar="DIR",
                help="where the per-device lease locks live (default: one directory per user in the temp dir)")
    g.addoption("--infer-launch-timeout", metavar="S", default="900",
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
    g.addoption("--infer-slurm-queue-timeout", metavar="S", default="3600",
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
    queue = _positive(config, "--infer-slurm-queue-timeout", float)
    time_limit = str(config.getoption("infer_slurm_time"))
    if not SLURM_TIME.fullmatch(time_limit):
        raise pytest.UsageError(f"pytest-infer: --infer-slurm-time {time_limit!r}: not a Slurm time limit (MM, "
                                f"MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED)")
    return SlurmSettings(partition=config.getoption("infer_slurm_partition"),
                         account=config.getoption("infer_slurm_account"), qos=config.getoption("infer_slurm_qos"),
                         reservation=config.getoption("infer_slurm_reservation"),
                         time=time_limit, extra=extra,
                         output=path("--infer-slurm-output"), queue_timeout_s=queue)


# sbatch --time: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]], or unlimited.
SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|(?i:unlimited|infinite)")
SLURM_ONLY = ("partition", "account", "qos", "reservation", "args", "output")


def _rootpath(config: pytest.Config) -> Path:
    """The rootdir from the command line's paths alone. pytest chooses its rootdir before it knows plugin
    options, so in `--report-dir /some/dir` (a space, not `=`) it takes the value for a path and the
    rootdir moves; chosen again from the fully parsed positional paths, ours (baselines/) does not."""
    from _pytest.config.findpaths import determine_setup  # no public way to ask again; fall back if it moves

    try:
        root, *_ = determine_setup(inifile=config.option.inifilename, override_ini=config.option.override_ini,
                                   args=[str(a) for a in config.option.file_or_dir or []],
                                   rootdir_cmd_arg=config.option.rootdir or None,
                                   invocation_dir=config.invocation_params.dir)
    except Exception:  # a private API: its absence must not break a run
        return config.rootpath
    return Path(root)


def _positive(config: pytest.Config, option: str, kind: Callable[[str], Any]) -> Any:
    """A number option above 0, or one usage line naming it."""
    text = config.getoption(option.lstrip("-").replace("-", "_"))
    if text is None:
        return None
    try:
        value = kind(str(text))
    except ValueError:
        raise pytest.UsageError(f"pytest-infer: {option} {text!r}: not a number") from None
    if not value > 0 or value != value:
        raise pytest.UsageError(f"pytest-infer: {option} {text}: must be above 0")
    return value


def _directory(option: str, path: Path | None, create: bool) -> None:
    """A directory option that is a file, or (with `create`) cannot be made, is one usage line."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"pytest-infer: {option} {path}: is a file, not a directory")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise pytest.UsageError(f"pytest-infer: {option} {path}: cannot be created: "
                                    f"{exc.strerror or exc}") from None


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
    history: Path | None = None  # --infer-history; None: <report-dir>/history

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
        if launcher == "local":
            given = [n for n in SLURM_ONLY if config.getoption(f"infer_slurm_{n}")]
            if given:
                raise pytest.UsageError(f"pytest-infer: --infer-slurm-{given[0]} needs --infer-launcher slurm")
        stacks = get("--infer-stack")
        if any(not e.strip() for e in stacks):
            raise pytest.UsageError("pytest-infer: --stack '': empty expression (a label such as base or fp4+mtp, "
                                    "or an expression such as 'mtp and not disagg')")
        repeats = config.getoption("infer_repeats")
        if repeats is not None:
            try:
                repeats = int(repeats)
            except ValueError:
                raise pytest.UsageError(f"pytest-infer: --infer-repeats {repeats!r}: not a whole number") from None
        results = path("--infer-results")
        baseline_update = bool(get("--infer-baseline-update"))
        if baseline_update and results is not None:
            raise pytest.UsageError("pytest-infer: --infer-baseline-update: baselines are written from live "
                                    "measurements only, on the machine they gate (not from --infer-results)")
        report_root = Path(get("--infer-report-dir") or "reports").resolve()
        matrices, lease_dir = path("--infer-matrices"), path("--infer-lease-dir")
        rootpath = _rootpath(config)
        baseline_dir = path("--infer-baseline-dir") or rootpath / "baselines"
        running = config.getoption("gpu") is not None and not config.getoption("collectonly") and not workerinput
        history = path("--infer-history")
        for option, where, create in (("--infer-matrices", matrices, False), ("--infer-history", history, running),
                                      ("--infer-baseline-dir", baseline_dir, False),
                                      ("--infer-report-dir", report_root, running),
                                      ("--infer-lease-dir", lease_dir, running)):
            _directory(option, where, create)  # made now, when a run will write there: it fails here, not late
        return cls(
            launcher=launcher, slurm=_slurm(config, path) if launcher == "slurm" else None, history=history,
            gpu=config.getoption("gpu"), suite=suite, engines=tuple(dict.fromkeys(get("--infer-engine"))),
            model=get("--infer-model"), stacks=stacks,
            report_root=report_root, results=results,
            plan=bool(config.getoption("infer_plan")), matrices=matrices,
            fresh=bool(config.getoption("infer_fresh")), engine_args=config.getoption("infer_engine_args"),
            repeats=repeats, devices=config.getoption("infer_devices"),
            lease_dir=lease_dir, launch_timeout_s=_positive(config, "--infer-launch-timeout", float),
            baseline_dir=baseline_dir, baseline_update=baseline_update,
            baseline_strict=bool(get("--infer-baseline-strict")), xdist_worker=workerinput is not None,
            run_id=str(workerinput["testrunuid"]) if workerinput else None, rootpath=rootpath)

    def relative(self, path: Path) -> str:
        """A path as the user would type it from the rootdir (absolute outside it)."""
        try:
            return str(path.relative_to(self.rootpath))
        except ValueError:
            return str(path)
