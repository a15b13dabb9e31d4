"""LocalLauncher with fake servers (no engine): ports, health polling, failure messages, no survivors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from pytest_infer.deployment import Deployment, Role
from pytest_infer.launch.local import LaunchError, LocalLauncher, free_ports, resolve_argv

# A fake engine: optionally spawns a grandchild (like vLLM's EngineCore), becomes healthy after a delay,
# or exits during start-up. The marker in its argv lets a test find every process of the tree.
FAKE_SERVER = textwrap.dedent(
    """
    import http.server, subprocess, sys, time
    port, marker = int(sys.argv[1]), sys.argv[4]
    ready_after, die_after = float(sys.argv[2]), float(sys.argv[3])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker, "grandchild"])
    print("spawned engine core", child.pid, flush=True)
    start = time.monotonic()
    if die_after >= 0:
        time.sleep(die_after)
        for i in range(40):
            print(f"log line {i}")
        print("RuntimeError: fake engine failed to allocate KV cache", flush=True)
        sys.exit(3)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/health" and time.monotonic() - start >= ready_after
            self.send_response(200 if ok else 503)
            self.end_headers()
        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake_server.py"
    path.write_text(FAKE_SERVER)
    return path


def role(fake: Path, name: str, port: int | None, marker: str, ready_after: float = 0.0,
         die_after: float = -1.0) -> Role:
    argv = ["python", str(fake), str(port or 0), str(ready_after), str(die_after), marker]
    return Role(name=name, kind="server", argv=argv, env={"FAKE_ROLE": name}, gpus=0, host="127.0.0.1",
                port=port)


def deployment(*roles: Role) -> Deployment:
    return Deployment(stack="s", engine="fake", gpu="cpu", model="m", served_name="m", roles=list(roles),
                      endpoint=roles[0].name, nodes=1)


def marked(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def test_free_ports_distinct_and_bindable() -> None:
    a, b = free_ports(5), free_ports(5)
    assert len(set(a + b)) == 10
    import socket

    for port in a:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_resolve_argv_uses_the_venv() -> None:
    assert resolve_argv(["python", "-m", "x"])[0] == str(Path(sys.executable).parent / "python")
    assert resolve_argv(["other", "a"]) == ["other", "a"]


def test_healthy_roles_and_clean_exit(fake: Path, tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4()}"
    p1, p2 = free_ports(2)
    dep = deployment(role(fake, "prefill", p1, marker, ready_after=1.0), role(fake, "decode", p2, marker),
                     role(fake, "follower", None, marker))
    t = time.monotonic()
    with LocalLauncher(dep, tmp_path / "logs", timeout=30) as launcher:
        assert time.monotonic() - t >= 1.0  # waited for the slow role's 503 to turn into 200
        launcher.check_alive()
        assert len(marked(marker)) == 6  # three roles, each with its grandchild
        assert "spawned engine core" in launcher.log_tail("prefill")
        assert launcher.log_tail("decode").startswith("$ ")  # the command line heads each log
    assert marked(marker) == []


def test_death_during_startup_names_role_code_and_log_tail(fake: Path, tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4()}"
    (port,) = free_ports(1)
    dep = deployment(role(fake, "prefill", port, marker, die_after=0.5))
    with pytest.raises(LaunchError) as info, LocalLauncher(dep, tmp_path, timeout=30):
        pass
    msg = str(info.value)
    assert "'prefill'" in msg and "exited with code 3" in msg
    assert "fake engine failed to allocate KV cache" in msg
    assert "log line 39" in msg and "log line 11" in msg and "log line 10\n" not in msg  # exactly 30 lines
    assert marked(marker) == []  # the orphaned grandchild was killed too


def test_timeout_message(fake: Path, tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4()}"
    (port,) = free_ports(1)
    dep = deployment(role(fake, "server", port, marker, ready_after=60))
    with (
        pytest.raises(LaunchError, match=r"'server' not healthy after 1.5 s"),
        LocalLauncher(dep, tmp_path, timeout=1.5),
    ):
        pass
    assert marked(marker) == []


def test_check_alive_after_start(fake: Path, tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4()}"
    (port,) = free_ports(1)
    with LocalLauncher(deployment(role(fake, "server", port, marker)), tmp_path, timeout=30) as launcher:
        launcher.procs["server"].send_signal(signal.SIGSEGV)
        with pytest.raises(LaunchError, match="'server' was killed by SIGSEGV"):
            for _ in range(50):
                launcher.check_alive()
                time.sleep(0.1)
    assert marked(marker) == []


def test_stubborn_process_is_killed(tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4()}"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    r = Role(name="stubborn", kind="server", argv=["python", "-c", stubborn, marker], env={}, gpus=0,
             host="127.0.0.1", port=None)
    t = time.monotonic()
    with LocalLauncher(deployment(r), tmp_path, kill_grace=1.0):
        time.sleep(0.5)
    assert marked(marker) == []
    assert time.monotonic() - t < 5


# The child runs a deployment and is interrupted while waiting for health (no role ever becomes healthy).
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pytest_infer.deployment import Deployment, Role
    from pytest_infer.launch.local import LocalLauncher, free_ports
    fake, marker, logs = sys.argv[1], sys.argv[2], sys.argv[3]
    roles = [Role(name=f"r{i}", kind="server", argv=["python", fake, str(p), "600", "-1", marker], env={},
                  gpus=0, host="127.0.0.1", port=p) for i, p in enumerate(free_ports(3))]
    dep = Deployment(stack="s", engine="fake", gpu="cpu", model="m", served_name="m", roles=roles,
                     endpoint="r0", nodes=1)
    print("launching", flush=True)
    with LocalLauncher(dep, logs, timeout=600):
        pass
    """
)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_wait_leaves_no_process(fake: Path, tmp_path: Path, sig: signal.Signals) -> None:
    marker = f"marker-{uuid.uuid4()}"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps an ignored
    # SIGINT (no KeyboardInterrupt): give the child the disposition a user's terminal would.
    child = subprocess.Popen([sys.executable, str(script), str(fake), marker, str(tmp_path / "logs")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             cwd=Path(__file__).resolve().parents[1], preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 30
        while len(marked(marker)) < 6:  # three fake servers and their grandchildren are up
            assert child.poll() is None, child.communicate()[0].decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        child.send_signal(sig)
        out = child.communicate(timeout=30)[0].decode()
    finally:
        if child.poll() is None:
            child.kill()
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in out
    else:
        assert child.returncode == -signal.SIGTERM  # the default disposition still ends the process
    assert marked(marker) == [], out
    assert os.path.exists(tmp_path / "logs" / "r2.log")
