"""Device leases: all-or-none, waiting, released by the kernel when the holder dies, and leased ids reach
the roles' environment without touching the measurement key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_infer.launch.leases import DevicePool, LeaseError, device_pool, parse_devices


def test_device_lists_parse_and_bad_ones_say_why() -> None:
    assert parse_devices("0,1, 3", "x") == ("0", "1", "3")
    assert parse_devices("0-3", "x") == ("0", "1", "2", "3")
    assert parse_devices("GPU-6f3e1a2b", "x") == ("GPU-6f3e1a2b",)
    for bad, why in (("0,0", "listed twice"), ("3-1", "runs backwards"), ("a b", "not a device id"),
                     (",", "no devices")):
        with pytest.raises(LeaseError, match=why):
            parse_devices(bad, "--infer-devices")


def test_pool_from_option_then_visible_devices_then_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert device_pool("nvidia", "5", 8) == (("5",), "--infer-devices")
    assert device_pool("nvidia", None, 8) == (("2", "3"), "CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "4")
    assert device_pool("amd", None, 8) == (("4",), "HIP_VISIBLE_DEVICES")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert device_pool("nvidia", None, 2) == (("0", "1"), "devices detected")
    cores, how = device_pool("cpu", None, 0)
    assert len(cores) >= 1 and "cores" in how


def test_leases_are_all_or_none_and_wait(tmp_path: Path) -> None:
    pool = DevicePool(("0", "1", "2"), tmp_path, poll_s=0.05)
    with pool.lease(2) as a:
        assert a == ("0", "1")
        assert pool.try_take(2) is None  # only one free: nothing is held
        with pool.lease(1) as b:
            assert b == ("2",)
            with pytest.raises(TimeoutError, match="no 1 free device"), pool.lease(1, timeout=0.3):
                pass
    with pool.lease(3) as c:
        assert c == ("0", "1", "2")  # everything was released
    with pytest.raises(LeaseError, match="needs 4 device"), pool.lease(4):
        pass


def test_a_killed_holder_releases_its_devices(tmp_path: Path) -> None:
    """The worker holding a lease dies (SIGKILL, no cleanup): the kernel drops its flock."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pytest_infer.launch.leases import DevicePool
        with DevicePool(("0", "1"), Path({str(tmp_path)!r})).lease(2) as got:
            print(",".join(got), flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0,1"
        pool = DevicePool(("0", "1"), tmp_path, poll_s=0.05)
        assert pool.try_take(1) is None
        holder.kill()
        holder.wait(timeout=10)
        t0 = time.monotonic()
        with pool.lease(2, timeout=5) as got:
            assert got == ("0", "1") and time.monotonic() - t0 < 2
    finally:
        holder.kill()


def test_leased_devices_reach_the_roles_but_not_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_infer.matrix import Matrix, default_root
    from pytest_infer.measure.runner import Runner
    from pytest_infer.paths import RunPaths
    from pytest_infer.space import Stack
    from pytest_infer.store.store import Store

    matrix = Matrix(default_root())
    runner = Runner(matrix=matrix, store=Store(tmp_path / "s"), paths=RunPaths(tmp_path, "cpu"),
                    model="tiny-glm4moe-mtp", engine_version="0.32.0", pool=DevicePool(("0", "1"), tmp_path / "l"))
    base = Stack("cpu", "vllm", ())
    key = runner.key(base)
    dep = runner.launchable(base, tmp_path / "run", ("1", "0"))
    assert dep.role("server").env["VLLM_CPU_OMP_THREADS_BIND"] == "1"  # the leased core, not core 0
    assert runner.key(base) == key
    monkeypatch.setattr("pytest_infer.launch.gpus.preflight", lambda *a: None)
    model = matrix.model_defaults["h100"].model
    gpu = Runner(matrix=matrix, store=Store(tmp_path / "s"), paths=RunPaths(tmp_path, "cpu"), model=model,
                 engine_version="0.32.0")
    disagg = Stack("h100", "vllm", ("disagg",))
    ids = tuple(str(i) for i in range(4, 4 + gpu.plan(disagg).gpus))
    dep = gpu.launchable(disagg, tmp_path / "run2", ids)
    slices = [dep.role(r.name).env["CUDA_VISIBLE_DEVICES"].split(",") for r in dep.roles if r.gpus]
    assert [len(s) for s in slices] == [r.gpus for r in dep.roles if r.gpus]  # each role its own slice
    assert [d for s in slices for d in s] == list(ids) and "CUDA_VISIBLE_DEVICES" not in dep.role("router").env
    assert "CUDA_VISIBLE_DEVICES" not in gpu.plan(disagg).role("prefill").env


def test_engine_args_change_the_key_and_reach_serving_roles_only(tmp_path: Path) -> None:
    from pytest_infer.matrix import Matrix, default_root
    from pytest_infer.measure.runner import Runner
    from pytest_infer.paths import RunPaths
    from pytest_infer.space import Stack
    from pytest_infer.store.store import Store

    matrix = Matrix(default_root())

    def runner(extra: tuple[str, ...]) -> Runner:
        return Runner(matrix=matrix, store=Store(tmp_path), paths=RunPaths(tmp_path, "cpu"), model="tiny-glm4moe-mtp",
                      engine_version="0.32.0", extra_args=extra)

    disagg = Stack("cpu", "vllm", ("disagg",))
    plain, capped = runner(()), runner(("--max-num-seqs", "1"))
    assert plain.key(disagg) != capped.key(disagg)
    for role in capped.plan(disagg).roles:
        assert (role.argv[-2:] == ["--max-num-seqs", "1"]) == (role.kind != "router"), role.argv
