"""The lab: per engine one Runner (launch, sweep, store), the device pool it leases from, the models the
repo builds, and interleaved measurement of the run's deployments (Workload.interleave)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_infer.builder import load_builder
from pytest_infer.launch.gpus import device_fingerprint, visible_devices
from pytest_infer.launch.leases import DevicePool, LeaseError, default_lock_dir, device_pool
from pytest_infer.measure.runner import Runner
from pytest_infer.run import Run, usage
from pytest_infer.selection import Selection
from pytest_infer.space import Stack
from pytest_infer.store.records import Measurement
from pytest_infer.store.store import Store

if TYPE_CHECKING:
    from pytest_infer.builder import ModelBuilder
    from pytest_infer.launch.leases import DevicePool


class Lab:
    def __init__(self, run: Run, selection: Selection, log: Callable[[str], None] = print, *,
                 fresh: bool = False, with_parts: bool = True) -> None:
        self.run = run
        self.selection = selection
        self.log = log
        self.fresh = fresh or run.options.fresh  # a regression run measures anew
        self.with_parts = with_parts  # interleave a stack's parts with it (composability's references)
        self._runners: dict[str, Runner] = {}
        self._built: tuple[dict[str, str], str] | None = None

    @property
    def builder(self) -> ModelBuilder | None:
        spec = self.run.matrix.models.get(self.run.model)
        if spec is None or spec.builder is None:
            return None
        return load_builder(spec.builder)

    def local_models(self) -> tuple[dict[str, str], str]:
        """Models the repo builds itself (no download): (name -> directory, fingerprint), built on first use
        (a plan builds them too: its keys and paths are the run's)."""
        builder, model = self.builder, self.run.model
        if builder is None:
            return {}, model
        out = self.run.paths.model_dir(model)
        if self.run.replay:
            return {model: str(out)}, model
        if self._built is None:
            builder.build(out)
            self._built = {model: str(out)}, builder.fingerprint(out)
        return self._built

    def runner(self, engine: str) -> Runner:
        if engine in self._runners:
            return self._runners[engine]
        run, opts = self.run, self.run.options
        replayed = self.selection.replayed is not None
        root = run.paths.replayed if replayed else opts.results if opts.results else run.paths.results
        local, fingerprint = self.local_models()
        runner = Runner(
            matrix=run.matrix, store=Store(root, read_only=run.replay), paths=run.paths, model=run.model,
            engine_version=run.versions.get(engine) or "unknown", local_models=local, model_fingerprint=fingerprint,
            launch_timeout_s=opts.launch_timeout_s, replay=run.replay, log=self.log, run_id=run.run_id,
            fresh=self.fresh, extra_args=run.extra_args.get(engine, ()),
            # On Slurm the lease is the job: the allocation's devices, not a pool on this host.
            pool=None if run.replay or opts.slurm is not None else self.device_pool(),
            host_devices=run.matrix.gpus[run.gpu].host_devices, slurm=opts.slurm,
            device="" if run.replay else device_fingerprint(run.vendor))
        self._runners[engine] = runner
        return runner

    def device_pool(self) -> DevicePool:
        vendor, opts = self.run.vendor, self.run.options
        try:
            ids, _ = device_pool(vendor, opts.devices, 0 if vendor == "cpu" else visible_devices(vendor)[0])
        except LeaseError as exc:
            raise usage(str(exc)) from None
        return DevicePool(ids, opts.lease_dir or default_lock_dir(), vendor)

    def measure(self, stack: Stack) -> Measurement:
        runner = self.runner(stack.engine)
        if self.run.workload.interleave and not runner.replay:
            group = self.interleaved_group(stack)
            if stack in group:
                runner.measure_together(group)
        return runner.measure(stack)

    def interleaved_group(self, stack: Stack) -> list[Stack]:
        """What this run measures on the stack's engine, to be measured together (Workload.interleave):
        the collected stacks and, for a suite comparing with parts, their parts; not the unsupported or
        known-broken ones (they run alone, and fail alone). The same list on every xdist worker."""
        def ok(s: Stack) -> bool:
            return s.engine == stack.engine and self.selection.measurable(s)

        group = [s for s in self.selection.planned if ok(s)]
        if self.with_parts:
            group += [p for s in group for p in s.parts() if ok(p)]
        return sorted(set(group), key=lambda s: (len(s.opts), s.id))

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
