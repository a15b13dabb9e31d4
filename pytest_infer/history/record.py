"""One run of one engine on one GPU kind, as the history keeps it: what ran (versions, settings) and each
stack's numbers (verdict, ratio, efficiency, its clean levels). Built from the report rows, so a live
run, a run that reused the store and a replay of published files all give the same kind of entry."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pytest_infer.report.markdown import verdict_of
from pytest_infer.report.rows import Row

if TYPE_CHECKING:
    from pytest_infer.run import Run
    from pytest_infer.space import Stack

SCHEMA = 1


class Level(BaseModel):
    concurrency: int
    repeat: int
    interactivity: float
    per_gpu_throughput: float
    per_gpu_output_throughput: float | None = None


class Point(BaseModel):
    """One stack in one run."""

    stack: str  # its id: gpu-engine-label[@model]
    label: str  # base, disagg+mtp, ...
    opts: list[str]
    variant: str = ""  # the replayed data's model/parallelism variant (part of the id)
    outcome: str  # as the matrix says it: PASS, FAIL, inconclusive, xfail (known broken), skip, ...
    detail: str = ""  # the first line of why (the known-broken entry's link, the unsupported reason)
    date: str = ""  # when it was measured (the store's or the replayed files' dates)
    ratio: float | None = None  # worst ratio to the best part, with its interval
    low: float | None = None
    high: float | None = None
    interactivity: float | None = None
    best_part: str | None = None
    tolerance: float | None = None  # the margin it was judged with
    intervals: dict[str, list[float]] | None = None  # interactivity -> [ratio, low, high]
    efficiency: float | None = None
    efficiency_low: float | None = None
    efficiency_high: float | None = None
    efficiency_interactivity: float | None = None
    split: str | None = None  # 3+ optimizations: the sub-stacks that predict best, and the efficiency against them
    split_efficiency: float | None = None
    levels: list[Level] = []  # clean levels only: the ones in the stack's curve


class Entry(BaseModel):
    schema_version: int = SCHEMA
    when: str  # ISO time: the run's start, or the replayed data's latest date
    source: str  # "live", or "replay <dir>"
    suite: str
    gpu: str
    engine: str
    engine_version: str = ""
    image: str | None = None
    plugin_version: str = ""
    plugin_commit: str | None = None
    model: str
    workload: dict[str, Any] = {}
    settings: dict[str, str] = {}  # what the user set that may change speed (engine args, launcher, repeats)
    points: list[Point]

    @property
    def key(self) -> str:
        """What makes two entries the same: everything but when it was added and by which kind of run, so
        the same results added twice (a rerun on the store, a second replay) add nothing."""
        body = self.model_dump(exclude={"when", "source"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]

    def point(self, label: str) -> Point | None:
        return next((p for p in self.points if p.label == label), None)


def _commit(where: Path) -> str | None:
    """The checkout's commit when the plugin runs from one (a developer's or a nightly's clone)."""
    if not (where.parent / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def plugin_identity() -> tuple[str, str | None]:
    try:
        version = importlib.metadata.version("pytest-infer")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return version, _commit(Path(__file__).resolve().parents[1])


def _point(row: Row, stack: Stack) -> Point:
    d = row.data
    levels = [Level(concurrency=lv.concurrency, repeat=lv.repeat, interactivity=lv.interactivity,
                    per_gpu_throughput=lv.per_gpu_throughput, per_gpu_output_throughput=lv.per_gpu_output_throughput)
              for lv in d.levels or [] if not lv.problems]
    intervals = None
    if d.ratios:
        intervals = {k: [v, *(d.intervals or {}).get(k, [v, v])[:2]] for k, v in d.ratios.items()}
    first = row.detail.splitlines()[0] if row.detail else ""
    return Point(stack=row.stack, label=stack.label, opts=list(stack.opts), variant=stack.variant or "",
                 outcome=verdict_of(row),
                 detail=first[:500], date=d.date or "", ratio=d.worst_ratio, low=d.worst_low, high=d.worst_high,
                 interactivity=d.worst_interactivity, best_part=d.best_part, tolerance=d.tolerance,
                 intervals=intervals,
                 efficiency=d.efficiency, efficiency_low=d.efficiency_low, efficiency_high=d.efficiency_high,
                 efficiency_interactivity=d.efficiency_interactivity, split=d.split,
                 split_efficiency=d.split_efficiency, levels=levels)


def _latest(dates: Sequence[str]) -> str:
    days = sorted({d.strip() for ds in dates for d in ds.split(",") if d.strip()})
    return days[-1] if days else ""


def entries_of(run: Run, rows: Sequence[Row], stacks: Mapping[str, Stack], started: datetime.datetime) -> list[Entry]:
    """One entry per engine of the run. A replay is dated by its data (`when` stays empty for data with no
    dates: the history does not take it, a point in time nobody knows would misplace a trend); a live run
    by when it started."""
    version, commit = plugin_identity()
    out: list[Entry] = []
    for engine in run.engines:
        mine = [(r, stacks[r.stack]) for r in rows if r.stack in stacks and stacks[r.stack].engine == engine]
        if not mine:
            continue
        points = [_point(r, s) for r, s in mine]
        if run.replay:
            when = _latest([p.date for p in points])
            versions = sorted({r.data.engine_version for r, _ in mine if r.data.engine_version})
            engine_version, source = ", ".join(versions), f"replay {run.options.results}"
        else:
            when, source = started.isoformat(timespec="seconds"), "live"
            engine_version = run.versions.get(engine) or ""
        options = run.options
        settings = {"engine args": " ".join(run.extra_args.get(engine, ())),
                    "launcher": "slurm" if options.slurm is not None else "local",
                    "repeats": str(run.workload.repeats)}
        out.append(Entry(when=when, source=source, suite=run.suite, gpu=run.gpu, engine=engine,
                         engine_version=engine_version, image=run.matrix.engines[engine].image_for(run.gpu, run.vendor),
                         plugin_version=version, plugin_commit=commit, model=run.model,
                         workload=run.workload.model_dump(exclude={"repeats"}), settings=settings, points=points))
    return out
