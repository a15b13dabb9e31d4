"""The run: the options checked against the matrices, once, before anything is collected or launched.

Every bad input here is one line and exit code 4 (pytest.UsageError). What follows (selection, the lab,
the suites, the reports) takes a Run and never reads the pytest config.
"""

from __future__ import annotations

import importlib.metadata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_infer.analysis.checks import Stats
from pytest_infer.builder import BuilderError, load_builder, load_task_writer
from pytest_infer.engines.compose import parse_engine_args
from pytest_infer.engines.registry import EngineError, adapter
from pytest_infer.launch.leases import LeaseError, device_pool
from pytest_infer.matrix import Matrix, MatrixError, Workload, default_root
from pytest_infer.options import Options
from pytest_infer.paths import RunPaths
from pytest_infer.space import Stack, matches

if TYPE_CHECKING:
    from collections.abc import Callable


def usage(msg: str) -> pytest.UsageError:
    return pytest.UsageError(f"pytest-infer: {msg}")


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model in (".", "..")


def engine_version(matrix: Matrix, engine: str) -> str | None:
    for dist in matrix.engines[engine].package:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class Run:
    options: Options
    matrix: Matrix
    gpu: str
    suite: str  # the suite's name (composability when --suite is not given)
    engines: tuple[str, ...]
    model: str
    stack_exprs: tuple[str, ...]
    paths: RunPaths
    run_id: str  # xdist workers share the controller's
    extra_args: dict[str, tuple[str, ...]] = field(default_factory=dict)  # --infer-engine-args, per engine
    versions: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def resolve(cls, options: Options, suite: str,
                default_stacks: Callable[[Matrix, str], list[str]] | None = None) -> Run:
        """Raises pytest.UsageError naming the option, file and key."""
        assert options.gpu is not None
        try:
            matrix = Matrix(options.matrices or default_root())
        except MatrixError as exc:
            raise usage(str(exc)) from None
        if options.repeats is not None:
            if options.repeats < 2:
                raise usage(f"--infer-repeats {options.repeats}: at least 2 (an interval needs two sweeps per side)")
            matrix.workloads = {k: w.model_copy(update={"repeats": options.repeats})
                                for k, w in matrix.workloads.items()}
        gpu = options.gpu
        if gpu not in matrix.gpus:
            raise usage(f"unknown GPU kind {gpu!r}; valid: {', '.join(matrix.gpus)}")
        supported = matrix.engines_for(gpu)
        engines = tuple(options.engines) or tuple(supported)
        for e in engines:
            if e not in supported:
                raise usage(f"unknown engine {e!r} for {gpu}; valid: {', '.join(supported)}")
        for e in engines:
            try:  # the adapter imports here, not mid-launch: a broken plug-in is one line before anything runs
                adapter(e)
            except EngineError as exc:
                raise usage(str(exc)) from None
        model = options.model or matrix.model_defaults[gpu].model
        if model not in matrix.models and _looks_like_path(model) and not Path(model).expanduser().is_dir():
            raise usage(f"--infer-model {model!r}: no such directory (a checkpoint path must exist here; a "
                        f"name from models.yaml or a hub id such as org/name is taken as it is)")
        spec = matrix.models.get(model)
        if spec is not None and spec.builder is not None:
            try:
                load_builder(spec.builder)
            except BuilderError as exc:
                raise usage(f"{matrix.root / 'models.yaml'}: key models.{model}.builder: {exc}") from None
        if spec is not None and spec.accuracy is not None and spec.accuracy.writer is not None:
            try:
                load_task_writer(spec.accuracy.writer)
            except BuilderError as exc:
                raise usage(f"{matrix.root / 'models.yaml'}: key models.{model}.accuracy.writer: {exc}") from None
        exprs = list(options.stacks) or (default_stacks(matrix, gpu) if default_stacks else [])
        probe = Stack(gpu, engines[0], tuple(matrix.optimizations))
        for expr in exprs:
            try:
                matches(probe, expr, list(matrix.optimizations))
            except (ValueError, SyntaxError) as exc:
                raise usage(f"--stack {expr!r}: {exc}") from None
        extra: dict[str, tuple[str, ...]] = {}
        if options.engine_args is not None:
            try:
                extra = {e: parse_engine_args(options.engine_args, [e]) for e in engines}
            except ValueError as exc:
                raise usage(str(exc)) from None
        try:  # a bad --infer-devices or *_VISIBLE_DEVICES is a usage error before anything runs
            device_pool(matrix.gpus[gpu].vendor, options.devices, 0)
        except LeaseError as exc:
            raise usage(str(exc)) from None
        return cls(options, matrix, gpu, suite, engines, model, tuple(exprs), RunPaths(options.report_root, gpu),
                   options.run_id or uuid.uuid4().hex, extra, {e: engine_version(matrix, e) for e in engines})

    # ---- what the checks are judged with ------------------------------------------------------------
    @property
    def workload(self) -> Workload:
        return self.matrix.workload(self.gpu)

    @property
    def vendor(self) -> str:
        return self.matrix.gpus[self.gpu].vendor

    @property
    def replay(self) -> bool:
        return self.options.results is not None

    @property
    def optimizations(self) -> list[str]:
        return list(self.matrix.optimizations)

    def stats(self, regression: bool = False, gpu: str | None = None) -> Stats:
        """The interval and margin of a throughput comparison: against the parts, or a baseline; of this
        run's GPU kind, or of `gpu` (another kind's results in the history)."""
        gpu = gpu or self.gpu
        t, w = self.matrix.thresholds, self.matrix.workload(gpu)
        return Stats(self.matrix.margins(gpu)[1 if regression else 0], t.confidence, t.bootstrap_from,
                     w.session_noise)
