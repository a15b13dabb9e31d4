"""No engine outlives the pytest that started it.

Every process a launcher starts carries `PYTEST_INFER_OWNER=<host>:<pid>:<start time>` of the pytest
process that owns it (children inherit it: vLLM's engine cores, DP ranks), and every Slurm job carries the
same tag in its comment. Two nets catch what a killed pytest leaves:

- a watchdog process per pytest process, started with the first launch, holds the read end of a pipe
  whose write end only pytest holds. When pytest dies, even by SIGKILL, the pipe closes and the watchdog
  ends every process and cancels every job tagged with its owner (`python -m pytest_infer.launch.reaper`);
- before launching, a run ends the leftovers of owners that no longer exist on this host (the watchdog was
  killed too, or the machine rebooted between a job's submission and now).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

import psutil

OWNER_VARIABLE = "PYTEST_INFER_OWNER"
COMMENT_PREFIX = "pytest-infer owner="  # Slurm job comments: "pytest-infer owner=<tag> run=<run id>"

_watchdog: subprocess.Popen[bytes] | None = None
_lock = threading.Lock()


def owner_tag(pid: int | None = None) -> str:
    """This host, the pid and its start time: a pid reused by another process is not the owner."""
    p = psutil.Process(pid or os.getpid())
    return f"{socket.gethostname()}:{p.pid}:{p.create_time():.2f}"


def alive(tag: str) -> bool:
    """Whether the owner named by `tag` still runs (a tag from another host is taken as alive)."""
    host, _, rest = tag.partition(":")
    pid_text, _, created = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        return f"{psutil.Process(int(pid_text)).create_time():.2f}" == created
    except (psutil.Error, ValueError):
        return False


def tagged_processes(match: Callable[[str], bool]) -> list[psutil.Process]:
    """Processes of this host whose owner tag satisfies `match` (never this process or its watchdog)."""
    mine = {os.getpid(), *([_watchdog.pid] if _watchdog is not None else [])}
    found = []
    for p in psutil.process_iter():
        if p.pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            tag = p.environ().get(OWNER_VARIABLE)
            if tag is not None and match(tag):
                found.append(p)
    return found


def end(procs: Iterable[psutil.Process], grace: float = 10.0) -> int:
    """SIGTERM, up to `grace` seconds, then SIGKILL; the number of processes ended."""
    procs = list(procs)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, left = psutil.wait_procs(procs, timeout=grace)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(left, timeout=5)
    return len(procs)


def our_jobs() -> list[tuple[str, str, str]]:
    """(job id, name, owner tag) of every Slurm job of this user that carries our comment; [] without Slurm."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return []
    try:
        out = subprocess.run([squeue, "--me", "--noheader", "--format=%i|%j|%k"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    jobs = []
    for line in out.splitlines():
        job, _, rest = line.partition("|")
        name, _, comment = rest.partition("|")
        if comment.startswith(COMMENT_PREFIX):
            jobs.append((job.strip(), name, comment.removeprefix(COMMENT_PREFIX).split()[0]))
    return jobs


def cancel(jobs: Iterable[str]) -> list[str]:
    jobs = list(jobs)
    scancel = shutil.which("scancel")
    if jobs and scancel is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([scancel, *jobs], capture_output=True, timeout=30, check=False)
    return jobs


def end_leftovers(log: Callable[[str], None]) -> None:
    """End the processes and cancel the jobs of owners that are gone (pytest killed with its watchdog)."""
    procs = tagged_processes(lambda tag: not alive(tag))
    if procs:
        owners = sorted({p.environ().get(OWNER_VARIABLE, "?") for p in procs if p.is_running()})
        log(f"[infer] ending {end(procs)} leftover engine process(es) of an earlier run that was killed "
            f"(owner {', '.join(owners)})")
    stale = [(job, name) for job, name, tag in our_jobs() if not alive(tag)]
    if stale:
        cancel(job for job, _ in stale)
        log(f"[infer] cancelled {len(stale)} leftover Slurm job(s) of an earlier run that was killed: "
            + ", ".join(f"{job} ({name})" for job, name in stale))


def watch() -> None:
    """Start this process's watchdog (once): it ends what we tagged when this process dies."""
    global _watchdog
    with _lock:
        if _watchdog is not None and _watchdog.poll() is None:
            return
        _watchdog = subprocess.Popen(
            [sys.executable, "-m", "pytest_infer.launch.reaper", owner_tag()], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def _main(tag: str) -> None:
    # Blocks until every writer of stdin is gone: the owner exited, cleanly or killed.
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    # The owner cleans up after itself when it can; give it a moment before taking over.
    deadline = time.monotonic() + 30
    while alive(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    end(tagged_processes(lambda t: t == tag))
    cancel(job for job, _, t in our_jobs() if t == tag)


if __name__ == "__main__":
    _main(sys.argv[1])
