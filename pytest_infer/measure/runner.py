"""measure(stack): launch the deployment once, sweep the concurrency levels, keep every level on disk.

Memoized in the session and on disk (keyed by what runs: argv, env, workload, engine version, model),
so a stack's parts are launched once however many checks read them, and a re-run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_infer.deployment import Deployment
from pytest_infer.engines.base import Placement
from pytest_infer.engines.compose import deployment_for
from pytest_infer.launch import gpus, reaper
from pytest_infer.launch.leases import ROLE_VARIABLE, LeaseError
from pytest_infer.launch.local import LaunchError, LocalLauncher, free_ports
from pytest_infer.matrix import Matrix
from pytest_infer.measure.evidence import read_back
from pytest_infer.measure.load import BenchClient, LoadError, Target, run_level, shortest_output
from pytest_infer.measure.metrics import Scraper
from pytest_infer.measure.power import PowerSampler
from pytest_infer.measure.smoke import SmokeResult, one_completion
from pytest_infer.paths import RunPaths
from pytest_infer.space import Stack
from pytest_infer.store.records import Level, Measurement, ResultError
from pytest_infer.store.store import Store

if TYPE_CHECKING:
    from pytest_infer.launch.base import Launcher
    from pytest_infer.launch.leases import DevicePool
    from pytest_infer.launch.slurm import SlurmSettings
    from pytest_infer.measure.smoke import SmokeResult


class MeasurementFailed(RuntimeError):
    """The deployment could not be measured; the message carries the reason and the log tails."""


def failure_of(measure: Callable[[Stack], object]) -> Callable[[Stack], str | None]:
    """part -> the first line of why `measure(part)` failed, or None when it measured."""
    def first_line(part: Stack) -> str | None:
        try:
            measure(part)
        except MeasurementFailed as exc:
            return str(exc).splitlines()[0]
        return None
    return first_line


@dataclass
class Runner:
    matrix: Matrix
    store: Store
    paths: RunPaths  # where every file of the run goes
    model: str
    engine_version: str
    local_models: dict[str, str] = field(default_factory=dict)  # built model name -> directory
    model_fingerprint: str = ""
    launch_timeout_s: float = 900.0
    replay: bool = False  # --results: read the store only, never launch
    fresh: bool = False  # ignore stored measurements
    run_id: str = ""  # one per pytest session, shared by xdist workers: a failure is not retried within it
    log: Callable[[str], None] = print
    # --infer-engine-args: appended to every serving role's argv; part of what is measured (the key).
    extra_args: tuple[str, ...] = ()
    # Devices leased per deployment (launch/leases.py); None: no leasing (a plan, a replay).
    pool: DevicePool | None = None
    host_devices: int = 0  # extra devices a deployment holds (cpu: a core for its front end and client)
    device: str = ""  # what it runs on (gpus.device_fingerprint), stored with each measurement
    # --launcher slurm: each deployment one Slurm job (launch/slurm.py); None: local processes.
    slurm: SlurmSettings | None = None
    _cache: dict[str, Measurement] = field(default_factory=dict)
    _bench: BenchClient | None = None
    _swept: bool = False

    def close(self) -> None:
        if self._bench is not None:
            self._bench.close()

    def plan(self, stack: Stack, hosts: Callable[[int], str] | None = None) -> Deployment:
        """What would run, on the plan's fixed ports (the key); `hosts` names the nodes of a multi-node plan."""
        if hosts is None and self.slurm is not None:
            from pytest_infer.launch.slurm import node_placeholder

            hosts = node_placeholder
        placement = Placement(run_dir=self.paths.run_dir(stack.id), own_nodes=self.slurm is not None)
        if hosts is not None:
            placement = Placement(hosts=hosts, run_dir=placement.run_dir, own_nodes=placement.own_nodes)
        return self._with_extra_args(deployment_for(self.matrix, stack, self.model, placement, self.local_models))

    def _with_extra_args(self, dep: Deployment) -> Deployment:
        if not self.extra_args:
            return dep
        roles = [r if r.kind == "router" else r.model_copy(update={"argv": [*r.argv, *self.extra_args]})
                 for r in dep.roles]
        return dep.model_copy(update={"roles": roles})

    @property
    def shared_devices(self) -> bool:
        """Whether deployments up together share their devices: cpu cores are left to the one measured."""
        return self.pool is None or self.pool.vendor == "cpu"

    @contextmanager
    def leased(self, *stacks: Stack) -> Iterator[tuple[str, ...]]:
        """The devices these deployments may use while the block runs (waits for free ones); () unleased.
        Several deployments up at once (interleaved) need the sum of their devices, except cpu cores:
        an idle deployment leaves its cores to the one being measured, so they share the largest lease."""
        if self.pool is None:
            yield ()
            return
        counts, pool = [self.plan(s).gpus for s in stacks], self.pool.devices
        needed = max(counts) if self.shared_devices else sum(counts)
        if needed > len(pool):  # the machine's own shortage says more than the pool's
            why = gpus.preflight(stacks[0].gpu, self.matrix.gpus[stacks[0].gpu].vendor, needed)
            raise LeaseError(why or f"needs {needed} device(s), the pool has {len(pool)}: {','.join(pool)}")
        k = min(needed + self.host_devices, len(pool))
        got = self.pool.try_take(k)
        if got is not None:  # free now: no waiting line in the log
            try:
                yield tuple(d for d, _ in got)
            finally:
                for _, lock in got:
                    lock.release()
            return
        self.log(f"[infer] {', '.join(s.id for s in stacks)}: waiting for {k} free device(s) of "
                 f"{','.join(self.pool.devices)}")
        with self.pool.lease(k) as devices:
            yield devices

    def key(self, stack: Stack) -> str:
        blob = json.dumps({
            "deployment": self.plan(stack).fingerprint(),
            "workload": self.matrix.workload(stack.gpu).load_identity(),
            "engine_version": self.engine_version,
            "model": self.model_fingerprint,
        }, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def measure(self, stack: Stack) -> Measurement:
        """The sweep of `stack`; raises MeasurementFailed (cached for the session) when it cannot run."""
        if stack.id not in self._cache:
            self._cache[stack.id] = self._measure(stack)
        m = self._cache[stack.id]
        if m.status != "ok":
            raise MeasurementFailed(m.error)
        return m

    def _measure(self, stack: Stack) -> Measurement:
        key = self.key(stack)
        if self.replay:
            m = self.store.load(stack.id, key) or self.store.find(stack.id)
            if m is None:
                return self._failed_record(stack, key, f"no stored result for {stack.id} in {self.store.root}")
            return m
        with self.store.lock(stack.id, key):
            m, final = self._usable(stack, key)
            return m if final and m is not None else self._launch_and_sweep(stack, key, m)

    def _note_launch(self, stack: Stack) -> None:
        """One line per launch in <report-dir>/<gpu>/launches.log: proof that no deployment runs twice."""
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} run={self.run_id} pid={os.getpid()} {stack.id}\n"
        path = self.paths.launches_log
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:  # one short O_APPEND write: atomic across xdist workers
            fh.write(line)

    def _failed_record(self, stack: Stack, key: str, error: str) -> Measurement:
        dep = self.plan(stack)
        return Measurement(key=key, stack=stack.id, engine=stack.engine, engine_version=self.engine_version,
                           gpu=stack.gpu, model=self.model, gpus=dep.gpus, decode_gpus=dep.decode_gpus,
                           workload=self.matrix.workload(stack.gpu), argv={}, status="failed", error=error)

    def launcher(self, stack: Stack, dep: Deployment, log_dir: Path, sweep: bool = True) -> Launcher:
        """The launcher of a deployment: local processes, or one Slurm job (--launcher slurm). The first
        launch of a session ends what a killed earlier run left behind (processes, jobs)."""
        if sweep and not self._swept:
            self._swept = True
            reaper.end_leftovers(self.log)
        if self.slurm is None:
            return LocalLauncher(dep, log_dir=log_dir, timeout=self.launch_timeout_s)
        from pytest_infer.launch.slurm import SlurmLauncher

        kind = self.matrix.gpus[stack.gpu]
        return SlurmLauncher(dep, log_dir, self.slurm, timeout=self.launch_timeout_s, run_id=self.run_id,
                             image=self.matrix.engines[stack.engine].image_for(stack.gpu, kind.vendor),
                             gpus_per_node=0 if kind.vendor == "cpu" else kind.gpus_per_node, log=self.log)

    def _power(self, stack: Stack, dep: Deployment) -> PowerSampler:
        """The power sampler of a level: the devices the deployment's roles were given (its lease)."""
        vendor = self.matrix.gpus[stack.gpu].vendor
        var = ROLE_VARIABLE.get(vendor)
        ids = [d for r in dep.roles for d in (r.env.get(var, "").split(",") if var else []) if d.strip()]
        away = "the devices are on Slurm nodes; power is read on this host only" if self.slurm is not None else ""
        return PowerSampler(vendor, tuple(dict.fromkeys(d.strip() for d in ids)), unavailable=away)

    def _level(self, stack: Stack, dep: Deployment, launcher: Launcher, target: Target,
               scraped: dict[str, str], conc: int, rep: int) -> tuple[Level, str]:
        """One level of one sweep, with the engine metrics and device power around it, and how the power was
        read (or why not); MeasurementFailed on any failure."""
        assert self._bench is not None
        workload = self.matrix.workload(stack.gpu)
        out = self.paths.bench_result(stack.id, conc, rep)
        try:
            with Scraper(scraped) as scraper, self._power(stack, dep) as power:
                data = run_level(self._bench, target, workload, conc, out)
            level = Level.from_bench(data, dep.gpus, dep.decode_gpus, str(out))
            level.expect_at_least(data, shortest_output(workload))
            if workload.interactivity_from == "server" and level.completed:
                level.use_server_interactivity(scraper.result, str(out))
        except (LoadError, ResultError) as exc:
            launcher.check_alive()
            raise MeasurementFailed(f"{exc}\n{_server_tails(launcher, dep)}") from None
        if not level.ok:  # failed requests, no tokens, or requests cut short: never a slow pass
            launcher.check_alive()  # a dead role is the root cause
            raise MeasurementFailed("; ".join(level.problems()) + f"\n{_server_tails(launcher, dep)}")
        level.repeat, level.metrics = rep, scraper.result
        watts = power.reading(last_s=level.duration_s)  # the benchmark's measured phase ends the window
        level.power_w, level.energy_j = watts.power_w, watts.energy_j
        # Named relative to the store: a store copied to another machine with its runs/ still finds them.
        level.source = os.path.relpath(out, self.store.root)
        accept = " ".join(f"{role} acceptance {v['spec_acceptance_rate']:.2f}" for role, v in scraper.result.items()
                          if "spec_acceptance_rate" in v)
        self.log(f"[infer] {stack.id}: c={conc} r={rep} {level.per_gpu_throughput:.0f} tok/s/device at "
                 f"{level.interactivity:.1f} tok/s/user{' ' + accept if accept else ''}"
                 f"{f', {level.power_w:.0f} W' if level.power_w is not None else ''}")
        launcher.check_alive()
        return level, watts.note

    def launchable(self, stack: Stack, run_dir: Path, devices: tuple[str, ...] = ()) -> Deployment:
        """The deployment with free local ports on the leased `devices`; MeasurementFailed if this machine
        lacks the devices."""
        plan = self.plan(stack)
        vendor = self.matrix.gpus[stack.gpu].vendor
        # On Slurm the devices are the allocation's, not this (submit) host's.
        why = None if self.slurm is not None else gpus.preflight(stack.gpu, vendor, max(r.gpus for r in plan.roles))
        if why:
            raise MeasurementFailed(f"{stack.id} not launched: {why}")
        names = sorted({r.name for r in plan.roles} | {"router"})  # adapters may name the router in flags
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        sides = dict(zip(names, free_ports(len(names)), strict=True))
        placement = Placement(ports=lambda name: ports[name], side_ports=lambda name: sides[name], run_dir=run_dir,
                              devices=devices, own_nodes=self.slurm is not None)
        if self.slurm is not None:
            from pytest_infer.launch.slurm import node_placeholder

            placement.hosts = node_placeholder
        dep = self._with_extra_args(deployment_for(self.matrix, stack, self.model, placement, self.local_models))
        var = ROLE_VARIABLE.get(vendor)
        if not devices or var is None:
            return dep  # cpu: the cores reach VLLM_CPU_OMP_THREADS_BIND through the placement
        roles, at = [], 0
        for r in dep.roles:  # each role its own slice of the lease, in role order
            if r.gpus:
                r = r.model_copy(update={"env": {**r.env, var: ",".join(devices[at:at + r.gpus])}})
                at += r.gpus
            roles.append(r)
        return dep.model_copy(update={"roles": roles})

    def _running_record(self, stack: Stack, key: str, previous: Measurement | None,
                        dep: Deployment) -> Measurement:
        """The record a launch fills level by level (a stored partial one resumes), saved as running."""
        plan = self.plan(stack)
        if previous is not None and previous.status == "failed":
            # A deployment that died mid-sweep keeps its clean levels, as after Ctrl-C: only the rest is measured.
            kept = [lv for lv in previous.levels if not lv.problems()]
            if kept:
                self.log(f"[infer] {stack.id}: resuming {len(kept)} stored level(s) of a run that failed "
                         f"({previous.error.splitlines()[-1][:160] if previous.error else 'no reason stored'})")
            previous.levels = kept
        m = previous if previous is not None else Measurement(
            key=key, stack=stack.id, engine=stack.engine, engine_version=self.engine_version, gpu=stack.gpu,
            model=self.model, gpus=dep.gpus, decode_gpus=dep.decode_gpus, workload=self.matrix.workload(stack.gpu),
            argv={r.name: r.argv for r in plan.roles}, device=self.device,
            model_fingerprint=self.model_fingerprint)
        m.status, m.error, m.run_id = "running", "", self.run_id
        m.date = time.strftime("%Y-%m-%d", time.gmtime())
        m.workload = self.matrix.workload(stack.gpu)  # a resumed one may now ask for more repeats
        self.store.save(m)
        self._note_launch(stack)
        return m

    def _launch_and_sweep(self, stack: Stack, key: str, previous: Measurement | None) -> Measurement:
        return self._interleaved([(stack, key, previous)])[stack.id]

    # ---- interleaved: a run's deployments up together, measured one level of each in turn ----------
    def measure_together(self, stacks: Sequence[Stack]) -> None:
        """Workload.interleave: measure every stack here that has no usable stored sweep in rounds, all
        deployments up at once, so that each pair of them can be compared round by round. Afterwards
        measure() returns them (or their failure) from the session cache."""
        todo = [s for s in dict.fromkeys(stacks) if s.id not in self._cache]
        if self.replay or not todo:
            return
        keys = {s.id: self.key(s) for s in todo}
        with ExitStack() as locks:
            for s in sorted(todo, key=lambda s: s.id):  # one order for every xdist worker: no deadlock
                locks.enter_context(self.store.lock(s.id, keys[s.id]))
            need: list[tuple[Stack, str, Measurement | None]] = []
            for s in todo:
                m, final = self._usable(s, keys[s.id])
                if final and m is not None:
                    self._cache[s.id] = m
                else:
                    need.append((s, keys[s.id], m))
            if need:
                self._cache.update(self._interleaved(need))

    def _usable(self, stack: Stack, key: str) -> tuple[Measurement | None, bool]:
        """(the stored measurement, True) to use as it is, or (a partial one to resume or None, False)."""
        m = self.store.load(stack.id, key)
        while self.store.set_aside:
            self.log(f"[infer] {stack.id}: {self.store.set_aside.pop(0)}")
        if m is not None and self.run_id and m.run_id == self.run_id and m.status != "running":
            return m, True  # another xdist worker of this session measured it (or failed to): never twice
        if self.fresh:
            return None, False
        workload = self.matrix.workload(stack.gpu)
        if m is not None and m.status == "ok" and m.complete(workload.concurrency, workload.repeats):
            self.log(f"[infer] {stack.id}: reusing stored measurement {self.store.path(stack.id, key)}")
            return m, True
        return m, False

    def _interleaved(self, need: list[tuple[Stack, str, Measurement | None]]) -> dict[str, Measurement]:
        """Lease the devices of all of `need`, then launch and sweep them together (one: a plain sweep)."""
        stacks = [s for s, _, _ in need]
        try:
            with self.leased(*stacks) as devices:
                return self._sweep_together(need, devices)
        except LeaseError as exc:
            return {s.id: self._failed_record(s, key, f"{s.id} not launched: {exc}") for s, key, _ in need}

    def _sweep_together(self, need: list[tuple[Stack, str, Measurement | None]],
                        devices: tuple[str, ...]) -> dict[str, Measurement]:
        """Launch each deployment (a failed one is recorded, the others go on), then sweep them in rounds;
        alone, a plain sweep. Every level is saved as it is measured."""
        done: dict[str, Measurement] = {}
        up: list[_Member] = []
        at = 0
        try:
            for stack, key, previous in need:  # launched one after the other, all kept up
                n = self.plan(stack).gpus
                mine = devices if self.shared_devices or not devices else devices[at:at + n]
                at += 0 if self.shared_devices else n
                member_or_failed = self._launch(stack, key, previous, mine, len(need))
                if isinstance(member_or_failed, Measurement):
                    done[stack.id] = member_or_failed
                else:
                    up.append(member_or_failed)
            if self._bench is None and up:
                self._bench = BenchClient(self.paths.bench_worker)
            workload = self.matrix.workload(need[0][0].gpu)
            round_id = uuid.uuid4().hex[:8]
            for rep in range(workload.repeats):
                order = up if rep % 2 == 0 else up[::-1]
                for i, conc in enumerate(workload.concurrency):
                    # A snake (A B, B A, A B ...): each level of one deployment sits next to the other's.
                    for member in order if i % 2 == 0 else order[::-1]:
                        if member.stack.id in done or member.m.level(conc, rep):
                            continue
                        try:
                            level, power_note = self._level(member.stack, member.dep, member.launcher,
                                                            member.target, member.scraped, conc, rep)
                        except (LaunchError, MeasurementFailed) as exc:
                            member.launcher.stop()  # its failure is the record; the others go on
                            done[member.stack.id] = self._fail(member, exc)
                            continue
                        level.block = f"{round_id}-r{rep}" if len(up) > 1 else ""
                        if power_note and power_note not in member.m.power_note:
                            if level.power_w is None:  # said once per measurement; no verdict hangs on it
                                self.log(f"[infer] {member.stack.id}: no device power: {power_note}")
                            member.m.power_note = "; ".join(filter(None, [member.m.power_note, power_note]))[:500]
                        member.m.levels.append(level)
                        self.store.save(member.m)
            for member in up:
                if member.stack.id not in done:
                    # The stack is what it claims: its deployment's own account, after the traffic.
                    member.m.evidence = ev = read_back(self.matrix, member.stack, member.dep,
                                                       self.paths.logs(member.stack.id),
                                                       [lv.metrics for lv in member.m.levels])
                    if ev is not None and not ev.ok:
                        member.m.status, member.m.error = "failed", ev.failure()
                        self.log(f"[infer] {member.stack.id}: {member.m.error.splitlines()[0]}")
                        self.store.save(member.m)
                        done[member.stack.id] = member.m
                        continue
                    member.m.status = "ok"
                    self.store.save(member.m)
                    done[member.stack.id] = member.m
        finally:
            for member in up:
                member.launcher.stop()
        return done

    def _launch(self, stack: Stack, key: str, previous: Measurement | None, mine: tuple[str, ...],
                together: int) -> _Member | Measurement:
        """Launch one deployment until healthy (the member to sweep), or its failed record. A port another
        process took between choosing and binding it is retried on fresh ports, PORT_RETRIES times."""
        run_dir = self.paths.run_dir(stack.id)
        for attempt in range(PORT_RETRIES + 1):
            try:
                dep = self.launchable(stack, run_dir, mine)
            except MeasurementFailed as exc:
                return self._failed_record(stack, key, str(exc))
            m = self._running_record(stack, key, previous, dep)
            self.log(f"[infer] {stack.id}: launching {', '.join(r.name for r in dep.roles)} "
                     f"({dep.gpus} device(s){' on ' + ','.join(mine) if mine else ''}"
                     f"{f', interleaved with {together - 1} other(s)' if together > 1 else ''}), "
                     f"logs in {run_dir}")
            launcher = self.launcher(stack, dep, self.paths.logs(stack.id))
            t0 = time.monotonic()
            member = _Member(stack, launcher, m)
            try:
                launcher.start()
            except LaunchError as exc:
                launcher.stop()
                if attempt < PORT_RETRIES and PORT_TAKEN in str(exc).lower():
                    self.log(f"[infer] {stack.id}: a port was taken between choosing and binding it; again on "
                             f"fresh ports ({attempt + 1} of {PORT_RETRIES})")
                    previous = m
                    continue
                return self._fail(member, exc)
            except BaseException:
                launcher.stop()
                raise
            m.launch_s = time.monotonic() - t0
            self.log(f"[infer] {stack.id}: healthy after {m.launch_s:.0f} s")
            return member
        raise AssertionError("unreachable: the last attempt returns")

    def _fail(self, member: _Member, exc: Exception) -> Measurement:
        causes = root_causes(self.paths.logs(member.stack.id))
        m = member.m
        m.status, m.error = "failed", (f"root cause: {causes}\n" if causes else "") + str(exc)
        self.store.save(m)
        return m


@dataclass
class _Member:
    """One deployment of an interleaved group, up."""

    stack: Stack
    launcher: Launcher
    m: Measurement

    @property
    def dep(self) -> Deployment:
        return self.launcher.deployment

    @property
    def target(self) -> Target:
        return Target(self.dep.endpoint_url, self.dep.served_name, self.dep.model)

    @property
    def scraped(self) -> dict[str, str]:
        return {r.name: r.url for r in self.dep.roles if r.port is not None and r.kind != "router"}


PORT_RETRIES = 3
PORT_TAKEN = "address already in use"  # errno 98, as Python and asyncio print it in the role's log tail

# When the engine core is killed (OOM killer, a signal) nothing raises: vLLM's front end says so instead.
_DEATH = ("exited unexpectedly", "died unexpectedly", "EngineDeadError")
_GENERIC = ("Engine core initialization failed", "Worker failed with error", "EngineCore encountered",
            "APIServer", "see root cause")


def root_causes(log_dir: Path, limit: int = 2) -> str:
    """The first distinct exceptions raised in the role logs, with where they were raised: vLLM buries
    the cause above its wrappers ("EngineCore encountered an issue")."""
    exc_re = re.compile(r"(?:^|\]\s+|\s)([A-Za-z_][\w.]*(?:Error|Exception))(?::\s*(.*))?$")
    frame_re = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')
    found: list[str] = []
    dead: list[str] = []
    for log in sorted(log_dir.glob("*.log")):
        frame = ""
        for line in log.read_text(errors="replace").splitlines():
            if hit := frame_re.search(line):
                frame = f" in {hit.group(3)} ({Path(hit.group(1)).name}:{hit.group(2)})"
                continue
            if any(d in line for d in _DEATH) and not dead:
                dead.append(line.split("] ", 1)[-1].strip()[:200])  # a process died without an exception
            if "WARNING" in line or any(g in line for g in _GENERIC):
                continue
            hit = exc_re.search(line.strip())
            if hit and not line.strip().startswith(("raise ", "File ")):
                text = f"{hit.group(1)}{': ' + hit.group(2).strip() if hit.group(2) else ''}{frame}"
                if text not in found:
                    found.append(text)
    return " | ".join(found[:limit] or dead)


def smoke(runner: Runner, stack: Stack) -> SmokeResult:
    """Launch the stack and send one greedy completion; raises MeasurementFailed with the root cause."""
    try:
        with runner.leased(stack) as devices:
            return _smoke_on(runner, stack, devices)
    except LeaseError as exc:
        raise MeasurementFailed(f"{stack.id} not launched: {exc}") from None


def _smoke_on(runner: Runner, stack: Stack, devices: tuple[str, ...]) -> SmokeResult:
    run_dir = runner.paths.run_dir(stack.id, "smoke")
    dep = runner.launchable(stack, run_dir, devices)
    runner.log(f"[infer] {stack.id}: smoke, launching {', '.join(r.name for r in dep.roles)}")
    launcher = runner.launcher(stack, dep, runner.paths.logs(stack.id, "smoke"))
    t0 = time.monotonic()
    try:
        with launcher:
            launch_s = time.monotonic() - t0
            dep = launcher.deployment
            first_s, text = first_completion(launcher, dep)
            evidence = read_back(runner.matrix, stack, dep, runner.paths.logs(stack.id, "smoke"))
    except (LaunchError, MeasurementFailed) as exc:
        causes = root_causes(runner.paths.logs(stack.id, "smoke"))
        raise MeasurementFailed((f"root cause: {causes}\n" if causes else "") + str(exc)) from None
    runner.log(f"[infer] {stack.id}: healthy after {launch_s:.0f} s, first completion in {first_s:.2f} s: {text!r}")
    if evidence is not None and not evidence.ok:
        raise MeasurementFailed(evidence.failure())
    return SmokeResult(launch_s, first_s, text, evidence)


def first_completion(launcher: Launcher, dep: Deployment, max_tokens: int = 8,
                     what: str = "") -> tuple[float, str]:
    """one_completion through a launched deployment; its failure as MeasurementFailed with the log tails
    (LaunchError first when a role has died)."""
    import httpx

    try:
        return one_completion(dep, max_tokens=max_tokens)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        launcher.check_alive()
        raise MeasurementFailed(f"{what}{exc}\n{_server_tails(launcher, dep)}") from None


def _server_tails(launcher: Launcher, dep: Deployment, n: int = 15) -> str:
    return "\n".join(f"--- last {n} lines of {r.name} log ---\n{launcher.log_tail(r.name, n)}" for r in dep.roles)
