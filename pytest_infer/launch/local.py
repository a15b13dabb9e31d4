"""Run a Deployment as local processes, wait until healthy, and never leave an engine process behind."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol

import httpx
import psutil
from filelock import FileLock

from pytest_infer.deployment import Deployment, Role
from pytest_infer.launch import reaper

if TYPE_CHECKING:
    from typing import Self  # typing.Self needs Python 3.11

__all__ = ["LaunchError", "LocalLauncher", "free_ports", "poll_health", "register", "resolve_argv", "unregister"]

PORT_RESERVATION_TTL = 600.0  # a reservation outlives any start-up; then the port is free for others
_RESERVATION_FILE = Path(tempfile.gettempdir()) / "pytest-infer-ports.json"
_handed_out: set[int] = set()
_ports_lock = threading.Lock()


class LaunchError(RuntimeError):
    """A role exited or never became healthy; the message carries the tail of its log."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return n distinct free TCP ports, never handed out twice by this process or (for 10 min) another."""
    lock = FileLock(str(_RESERVATION_FILE) + ".lock")
    with _ports_lock, lock, ExitStack() as sockets:
        now = time.time()
        try:
            reserved = {int(p): float(t) for p, t in json.loads(_RESERVATION_FILE.read_text()).items()}
        except (OSError, ValueError):
            reserved = {}
        reserved = {p: t for p, t in reserved.items() if t > now}
        ports: list[int] = []
        while len(ports) < n:
            # Keep each probe socket bound until all n are chosen, so the kernel cannot repeat a port.
            s = sockets.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if port not in _handed_out and port not in reserved:
                ports.append(port)
        _handed_out.update(ports)
        reserved.update(dict.fromkeys(ports, now + PORT_RESERVATION_TTL))
        tmp = _RESERVATION_FILE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({str(p): t for p, t in reserved.items()}))
        tmp.replace(_RESERVATION_FILE)
    return ports


def resolve_argv(argv: list[str]) -> list[str]:
    """Point a leading `vllm` / `vllm-router` / `python` at the running interpreter's venv, so PATH does
    not matter."""
    if argv and argv[0] in ("vllm", "vllm-router", "python"):
        candidate = Path(sys.executable).parent / argv[0]
        if candidate.exists():
            return [str(candidate), *argv[1:]]
    return list(argv)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class LocalLauncher:
    """Start every role of a deployment on this machine; a context manager that always cleans up.

    >>> with LocalLauncher(deployment, log_dir) as launched:
    ...     launched.check_alive()
    """

    def __init__(
        self,
        deployment: Deployment,
        log_dir: Path | str,
        *,
        timeout: float = 600.0,
        poll_interval: float = 0.5,
        kill_grace: float = 10.0,
    ) -> None:
        self.deployment = deployment
        self.log_dir = Path(log_dir)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.kill_grace = kill_grace
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # Every descendant ever seen, so children orphaned by a dead role leader are still killed.
        self._seen: dict[str, dict[int, psutil.Process]] = {}
        self._logs: list[IO[bytes]] = []

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            # __exit__ is not called when __enter__ raises (Ctrl-C while waiting included): clean up here.
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Spawn every role (routers last), then wait until each one with a port answers its health path."""
        register(self)
        reaper.watch()  # ends our roles if this process dies without cleaning up (SIGKILL)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for role in sorted(self.deployment.roles, key=lambda r: r.kind == "router"):
            self._spawn(role)
        self.wait_healthy()

    def _spawn(self, role: Role) -> None:
        argv = resolve_argv(role.argv)
        log = open(self.log_path(role.name), "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        # Unbuffered output, so the log tail is complete even when the process is killed.
        # The owner tag: the watchdog, and the next run, find and end what a killed pytest left behind.
        env = {"PYTHONUNBUFFERED": "1", **os.environ, **role.env, reaper.OWNER_VARIABLE: _owner()}
        try:
            self.procs[role.name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # own process group: Ctrl-C at the terminal is ours to handle
            )
        except OSError as e:
            raise LaunchError(f"role {role.name!r} could not start: {e} (argv: {shlex.join(argv)})") from e
        self._seen[role.name] = {}

    def wait_healthy(self) -> None:
        poll_health(self.deployment.roles, self.timeout, self.poll_interval, self.check_alive,
                    lambda role: f"role {role.name!r} not healthy after {self.timeout:g} s "
                                 f"({role.url}{role.health_path}){self._tail_block(role.name)}")

    def check_alive(self) -> None:
        """Raise LaunchError, with the log tail, if a role has exited. Cheap: call it between measurements."""
        for name, proc in self.procs.items():
            self._remember_children(name)
            code = _exit_code(proc)
            if code is not None:
                raise LaunchError(f"role {name!r} {_describe_exit(code)}{self._tail_block(name)}")

    def stop(self) -> None:
        """Kill every role's process tree: SIGTERM, up to kill_grace seconds, then SIGKILL. Idempotent."""
        try:
            self._signal_all(signal.SIGTERM)
            deadline = time.monotonic() + self.kill_grace
            while self._any_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            # Always, even on a second Ctrl-C during the grace period: kills stragglers and late children.
            self._signal_all(signal.SIGKILL)
            for proc in self.procs.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)  # reap only now: until then the zombie leader pins its group id
            for log in self._logs:
                log.close()
            self._logs.clear()
            unregister(self)

    def _signal_all(self, sig: signal.Signals) -> None:
        for name in reversed(list(self.procs)):  # router first, so it stops forwarding before servers go
            proc = self.procs[name]
            self._remember_children(name)
            for p in self._seen[name].values():
                with contextlib.suppress(psutil.Error):
                    p.send_signal(sig)  # psutil checks the create time, so a reused pid is never hit
            if proc.returncode is None:  # not reaped yet, so the group id cannot belong to anyone else
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)  # the leader, and children born after the last snapshot

    def _any_alive(self) -> bool:
        if any(_exit_code(proc) is None for proc in self.procs.values()):
            return True
        for seen in self._seen.values():
            for p in seen.values():
                try:
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        return True
                except psutil.Error:
                    pass
        return False

    def _remember_children(self, name: str) -> None:
        proc = self.procs[name]
        if _exit_code(proc) is not None:  # its orphans are now children of init: psutil cannot find them
            return
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                self._seen[name].setdefault(child.pid, child)
        except psutil.Error:
            pass

    # -- logs -----------------------------------------------------------------------------------------

    def log_path(self, role_name: str) -> Path:
        return self.log_dir / f"{role_name}.log"

    def log_tail(self, role_name: str, n: int = 30) -> str:
        """The last n lines of a role's log (reads only the end of big logs)."""
        path = self.log_path(role_name)
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256 * 1024))
                data = f.read()
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-n:])

    def _tail_block(self, role_name: str, n: int = 30) -> str:
        return f"\n--- last {n} lines of {self.log_path(role_name)} ---\n{self.log_tail(role_name, n)}"


_OWNER: list[str] = []


def _owner() -> str:
    if not _OWNER:
        _OWNER.append(reaper.owner_tag())
    return _OWNER[0]


def _exit_code(proc: subprocess.Popen[bytes]) -> int | None:
    """Like Popen.poll(), minus the reaping (WNOWAIT): an unreaped leader keeps its process group id ours."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.poll()
    if info is None:
        return None
    return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status


def poll_health(roles: list[Role], timeout: float, interval: float, check_alive: Callable[[], None],
                timed_out: Callable[[Role], str]) -> None:
    """Until every role with a port answers its health path: check_alive() between polls (a dead role
    raises at once), LaunchError(timed_out(first role still waiting)) after `timeout` seconds."""
    waiting = [r for r in roles if r.port is not None]
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while waiting:
            check_alive()
            waiting = [r for r in waiting if not _healthy(client, r.url + r.health_path)]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise LaunchError(timed_out(waiting[0]))
            time.sleep(interval)


def _healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


# -- process-wide safety net: atexit and SIGTERM/SIGHUP clean up every live launcher -----------------

class _Stoppable(Protocol):
    def stop(self) -> None: ...


_live: dict[int, _Stoppable] = {}
_installed = False
_install_lock = threading.Lock()
_Handler = Callable[[int, FrameType | None], Any] | int | None


def register(launcher: _Stoppable) -> None:
    """Stop `launcher` at exit and on SIGTERM / SIGHUP of this process, whatever else happens."""
    global _installed
    _live[id(launcher)] = launcher
    with _install_lock:
        if _installed:
            return
        _installed = True
        atexit.register(_stop_all)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, _chain(sig, signal.getsignal(sig)))


def unregister(launcher: _Stoppable) -> None:
    _live.pop(id(launcher), None)


def _stop_all() -> None:
    for launcher in list(_live.values()):
        launcher.stop()


def _chain(sig: signal.Signals, previous: _Handler) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        _stop_all()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            # Die the default way (exit status says "killed by SIGTERM"), now that nothing is left behind.
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

    return handler

