"""Run a Deployment as one Slurm job: one allocation of the deployment's nodes, one `srun` step per role.

The batch script is the whole deployment (written beside the role logs as `job.sbatch`, and by
`--infer-plan --launcher slurm` without submitting): it resolves the allocation's host names with
`scontrol show hostnames`, each node's address from Slurm's `NodeAddr`, writes them to `hosts.env` for
pytest, and starts every role as a step on its node (routers last), each step's output in
`runs/<stack>/<role>.log`. The first role to exit ends the job, its name and code in `exited`.

Roles learn each other's addresses from the allocation: a deployment is built with `@node<i>@` for the
host of node i, and the script substitutes the address. Ports are chosen by pytest (distinct across
every deployment this host launches, as locally); the script checks each is free on its node first.
The load client and the health and metrics polls run in pytest on the submit host, so the roles' ports
must be reachable from it (on the login node of a cluster: a login node reaches its compute nodes).
The report directory must be on a filesystem the nodes share (logs, the KV store of cpu disagg).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from pytest_infer.deployment import Deployment, Role
from pytest_infer.launch import reaper
from pytest_infer.launch.local import LaunchError, poll_health, register, resolve_argv, unregister

if TYPE_CHECKING:
    from typing import Self

NODE = re.compile(r"@node(\d+)@")
HOSTS_FILE, EXITED_FILE, SCRIPT_FILE = "hosts.env", "exited", "job.sbatch"


def node_placeholder(node: int) -> str:
    return f"@node{node}@"


@dataclass(frozen=True)
class SlurmSettings:
    """What a cluster user sets (--infer-slurm-*); None: Slurm's own default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    time: str = "04:00:00"  # the job's limit: a pytest killed with SIGKILL leaves a job that ends by it
    extra: tuple[str, ...] = ()  # more sbatch arguments, as given
    output: Path | None = None  # where the job's own output goes (default: the stack's runs/ folder)
    queue_timeout_s: float = 3600.0  # how long a job may wait in the queue before the launch fails


def _shell(arg: str) -> str:
    """`arg` quoted for bash, with every @node<i>@ expanded to the node's address at run time."""
    parts = NODE.split(arg)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f'"$NODE{part}"')
        elif part:
            out.append(shlex.quote(part))
    return "".join(out) or "''"


def batch_script(dep: Deployment, log_dir: Path, settings: SlurmSettings, *, comment: str, image: str | None,
                 gpus_per_node: int) -> str:
    """The sbatch script of a deployment: its directives, then one step per role."""
    job_out = (settings.output or log_dir) / "job-%j.out"
    directives = [f"--job-name=infer-{dep.stack}", f'--comment="{comment}"', f"--nodes={dep.nodes}",
                  "--ntasks-per-node=1", f"--time={settings.time}", f"--output={job_out}", f"--chdir={Path.cwd()}"]
    if gpus_per_node:
        directives.append(f"--gpus-per-node={gpus_per_node}")
    for flag, value in (("partition", settings.partition), ("account", settings.account), ("qos", settings.qos),
                        ("reservation", settings.reservation)):
        if value:
            directives.append(f"--{flag}={value}")
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), *(f"#SBATCH {a}" for a in settings.extra),
             f"# pytest-infer: {dep.stack}, {len(dep.roles)} role(s) on {dep.nodes} node(s)",
             "set -u", 'mapfile -t NAMES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
             "addr() { scontrol show node \"$1\" --oneliner | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2; }"]
    hosts = [f"export NODE{i}=$(addr \"${{NAMES[{i}]}}\")" for i in range(dep.nodes)]
    lines += hosts
    env_file = log_dir / HOSTS_FILE
    lines.append("{ " + "; ".join(f'echo "NODE{i}=$NODE{i} ${{NAMES[{i}]}}"' for i in range(dep.nodes))
                 + f"; }} > {shlex.quote(str(env_file))}.tmp && mv {shlex.quote(str(env_file))}.tmp "
                 f"{shlex.quote(str(env_file))}")
    lines.append("declare -A ROLE")
    for role in sorted(dep.roles, key=lambda r: r.kind == "router"):  # routers last, as locally
        lines.append(_step(role, log_dir, image))
        lines.append(f"ROLE[$!]={shlex.quote(role.name)}")
    exited = shlex.quote(str(log_dir / EXITED_FILE))
    lines += ["wait -n -p DONE; CODE=$?",
              f'echo "${{ROLE[$DONE]:-?}} $CODE" > {exited}',
              "exit 1  # one role gone: the deployment is broken; Slurm ends the other steps", ""]
    return "\n".join(lines)


def _step(role: Role, log_dir: Path, image: str | None) -> str:
    # The step is named after its role: `sacct -j <job>` and `squeue --steps` say which step is which.
    srun = ["srun", "--overlap", "--nodes=1", "--ntasks=1", "--exact", f'--nodelist="${{NAMES[{role.node}]}}"',
            f"--job-name={shlex.quote(role.name)}", f"--output={shlex.quote(str(log_dir / f'{role.name}.log'))}",
            "--kill-on-bad-exit=1"]
    if image:
        srun.append(f"--container-image={shlex.quote(image)}")  # pyxis, as InferenceX's launchers use
    env = {"PYTHONUNBUFFERED": "1", **role.env}
    argv = role.argv if image else resolve_argv(role.argv)
    check = ""
    if role.port is not None:  # a port taken on the node is named, not left to a bind error deep in a log
        # As the server will bind it: its own address, SO_REUSEADDR (uvicorn's); a connection that merely
        # uses the number as its source port on another address does not count.
        host = _shell(role.host).replace("'", "")
        check = (f"python3 -c \"import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
                 f"socket.SO_REUSEADDR, 1); s.bind(('{host}', {role.port}))\" "
                 f"|| {{ echo \"port {role.port} on {host} cannot be bound on $(hostname) (above)\"; exit 98; }}; ")
    body = " ".join(["exec", "env", *(_shell(f"{k}={v}") for k, v in env.items()), *map(_shell, argv)])
    # The step's own shell expands "$NODE<i>": the batch script exported them, and srun passes them on.
    return " ".join(srun) + f" bash -c {shlex.quote(check + body)} &"


def resolve_hosts(dep: Deployment, hosts: dict[int, str]) -> Deployment:
    """The deployment with each @node<i>@ replaced by node i's address (what pytest talks to)."""
    def sub(text: str) -> str:
        return NODE.sub(lambda m: hosts[int(m.group(1))], text)

    roles = [r.model_copy(update={"host": sub(r.host), "argv": [sub(a) for a in r.argv],
                                  "env": {k: sub(v) for k, v in r.env.items()}}) for r in dep.roles]
    return dep.model_copy(update={"roles": roles})


class SlurmLauncher:
    """A deployment as one Slurm job; a context manager that always cancels it.

    Waiting in the queue is not failing: the launch timeout counts from when the job runs, the queue has
    its own limit (`SlurmSettings.queue_timeout_s`), and the wait is logged with Slurm's reason.
    """

    def __init__(self, deployment: Deployment, log_dir: Path | str, settings: SlurmSettings, *,
                 timeout: float = 900.0, poll_interval: float = 1.0, run_id: str = "", image: str | None = None,
                 gpus_per_node: int = 0, log: Callable[[str], None] = print) -> None:
        self.planned = deployment
        self.deployment = deployment  # resolved to the allocation's addresses once the job runs
        self.log_dir = Path(log_dir).resolve()
        self.settings = settings
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.run_id = run_id
        self.image = image
        self.gpus_per_node = gpus_per_node
        self.log = log
        self.job: str | None = None
        self.state = ""
        self.up = False  # healthy once: an end after that is not "before the deployment was up"

    def script(self) -> str:
        comment = f"{reaper.COMMENT_PREFIX}{reaper.owner_tag()} run={self.run_id or '-'}"
        return batch_script(self.planned, self.log_dir, self.settings, comment=comment, image=self.image,
                            gpus_per_node=self.gpus_per_node)

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        register(self)
        reaper.watch()  # cancels the job if this process dies without cleaning up (SIGKILL)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stale in (HOSTS_FILE, EXITED_FILE):
            (self.log_dir / stale).unlink(missing_ok=True)
        path = self.log_dir / SCRIPT_FILE
        path.write_text(self.script())
        out = _run(["sbatch", "--parsable", str(path)], f"sbatch {path}")
        self.job = out.strip().split(";")[0]
        self.log(f"[infer] {self.planned.stack}: Slurm job {self.job} submitted ({self.planned.nodes} node(s))")
        self._wait_running()
        self.deployment = resolve_hosts(self.planned, self._hosts())
        self.wait_healthy()
        self.up = True

    def _wait_running(self) -> None:
        t0, reason = time.monotonic(), None
        while True:
            state, why = self._squeue()
            if state == "RUNNING":
                if reason is not None:
                    self.log(f"[infer] {self.planned.stack}: job {self.job} running after "
                             f"{time.monotonic() - t0:.0f} s in the queue")
                return
            if state in ("PENDING", "CONFIGURING"):
                # "None" is what a job shows for the moment before the scheduler looks at it: not worth a line.
                if why != reason and (why not in ("None", "") or time.monotonic() - t0 > 5):
                    self.log(f"[infer] {self.planned.stack}: job {self.job} waiting in the queue ({why})")
                    reason = why
                if time.monotonic() - t0 > self.settings.queue_timeout_s:
                    raise LaunchError(f"Slurm job {self.job} still waiting after {self.settings.queue_timeout_s:g} s "
                                      f"in the queue ({why}); --infer-slurm-queue-timeout sets the limit")
            else:
                raise LaunchError(self._ended(state))
            time.sleep(self.poll_interval)

    def _hosts(self) -> dict[int, str]:
        """Node index -> address, from the script's hosts.env (it writes it before starting any role)."""
        path, deadline = self.log_dir / HOSTS_FILE, time.monotonic() + 60
        while not path.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise LaunchError(f"Slurm job {self.job} running but {path} not written after 60 s: is "
                                  f"{self.log_dir} on a filesystem the nodes share?")
            time.sleep(0.2)
        hosts = {}
        for line in path.read_text().splitlines():
            var, _, rest = line.partition("=")
            addr, _, name = rest.partition(" ")
            if not addr:
                raise LaunchError(f"{path}: node {name or var} has no address (scontrol show node gave no NodeAddr)")
            hosts[int(var.removeprefix("NODE"))] = addr
        return hosts

    def wait_healthy(self) -> None:
        poll_health(self.deployment.roles, self.timeout, self.poll_interval, self.check_alive,
                    lambda role: f"role {role.name!r} not healthy after {self.timeout:g} s of Slurm job {self.job} "
                                 f"running ({role.url}{role.health_path}){self._tail_block(role.name)}")

    def check_alive(self) -> None:
        """Raise LaunchError, with the log tail, if a role has exited or the job ended."""
        exited = self.log_dir / EXITED_FILE
        if exited.exists():
            name, _, code = exited.read_text().strip().partition(" ")
            raise LaunchError(f"role {name!r} exited with code {code} (Slurm job {self.job}){self._tail_block(name)}")
        state, _ = self._squeue()
        if state != "RUNNING":
            raise LaunchError(self._ended(state))

    def stop(self) -> None:
        """Cancel the job and wait until Slurm no longer lists it (up to 60 s). Idempotent."""
        try:
            if self.job is not None and self.state not in ("", "GONE"):
                reaper.cancel([self.job])
                deadline = time.monotonic() + 60
                while self._squeue()[0] != "GONE" and time.monotonic() < deadline:
                    time.sleep(0.5)
        finally:
            unregister(self)

    # -- Slurm ----------------------------------------------------------------------------------------

    def _squeue(self) -> tuple[str, str]:
        """(state, reason) of the job; ("GONE", "") once Slurm no longer lists it."""
        if self.job is None:
            return "GONE", ""
        try:
            out = _run(["squeue", "--noheader", "--jobs", self.job, "--format=%T|%r"], "squeue")
        except LaunchError:
            out = ""  # an ended job may be refused as "Invalid job id"
        line = out.strip().splitlines()[0] if out.strip() else ""
        state, _, reason = line.partition("|")
        self.state = state or "GONE"
        return self.state, reason

    def _ended(self, state: str) -> str:
        out = sorted(self.log_dir.glob(f"job-{self.job}.out")) if self.settings.output is None else sorted(
            self.settings.output.glob(f"job-{self.job}.out"))
        tail = _tail(out[0]) if out else ""
        exited = self.log_dir / EXITED_FILE
        if exited.exists():
            name, _, code = exited.read_text().strip().partition(" ")
            return f"role {name!r} exited with code {code} (Slurm job {self.job}){self._tail_block(name)}"
        # squeue no longer lists an ended job: how it ended (TIMEOUT, NODE_FAIL, ...) is Slurm's to say.
        how = (final_state(self.job) if self.job is not None and state == "GONE" else "") or state.lower()
        when = "while the deployment ran" if self.up else "before the deployment was up"
        return f"Slurm job {self.job} ended ({how}) {when}" + (
            f"\n--- last lines of its output ---\n{tail}" if tail else "")

    # -- logs -----------------------------------------------------------------------------------------

    def log_path(self, role_name: str) -> Path:
        return self.log_dir / f"{role_name}.log"

    def log_tail(self, role_name: str, n: int = 30) -> str:
        return _tail(self.log_path(role_name), n)

    def _tail_block(self, role_name: str, n: int = 30) -> str:
        return f"\n--- last {n} lines of {self.log_path(role_name)} ---\n{self.log_tail(role_name, n)}"


def final_state(job: str) -> str:
    """How an ended job ended ("FAILED, exit code 3:0", "TIMEOUT"): slurmctld's record (`scontrol show
    job`, immediate, kept MinJobAge after the end, 300 s by default), else accounting's (sacct, where the
    cluster has slurmdbd; it gets the end a moment later and keeps it); "" when neither knows the job."""
    return scontrol_state(job) or sacct_state(job)


def scontrol_state(job: str) -> str:
    try:
        out = _run(["scontrol", "show", "job", job, "--oneliner"], "scontrol show job")
    except LaunchError:
        return ""  # no longer in slurmctld's memory ("Invalid job id specified")
    found = {k: m.group(1) for k in ("JobState", "ExitCode") if (m := re.search(rf"(?:^| ){k}=(\S+)", out))}
    return _describe(found.get("JobState", ""), found.get("ExitCode", ""))


def sacct_state(job: str) -> str:
    try:  # -X: the job's own line, not its steps'
        out = _run(["sacct", "-j", job, "-X", "-n", "-P", "--format=State,ExitCode"], "sacct")
    except LaunchError:
        return ""  # no accounting ("Slurm accounting storage is disabled")
    lines = out.strip().splitlines()
    state, _, code = lines[-1].partition("|") if lines else ("", "", "")
    return "" if state in ("PENDING", "RUNNING") else _describe(state, code)


def _describe(state: str, code: str) -> str:
    return f"{state}, exit code {code}" if state and code not in ("", "0:0") else state


def _tail(path: Path, n: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


def _run(argv: list[str], what: str) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        raise LaunchError(f"{argv[0]} not found: --launcher slurm needs Slurm's commands on PATH")
    try:
        done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{what}: no answer from Slurm in 60 s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise LaunchError(f"{what}: {said[-1] if said else f'exit code {done.returncode}'}")
    return done.stdout

