"""Baselines and the regression suite: the file format, environments, the check, and the whole workflow
(no baseline, --baseline-update, -n 2 against it, a real slowdown, a broken or foreign baseline) on fake
servers (this file only)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from test_composability_check import _fake_matrices, needs_bench

from pytest_infer.analysis.checks import Stats, regression
from pytest_infer.analysis.curve import Point, Sweeps
from pytest_infer.store import baselines
from pytest_infer.store.records import Level, Measurement

pytest_plugins = ["pytester"]
CURVE = [(60.0, 2600.0), (150.0, 1800.0), (190.0, 360.0)]


def _measurement(scale: float = 1.0, repeats: int = 3) -> Measurement:
    from pytest_infer.matrix import Workload

    levels = []
    for r in range(repeats):
        for i, (x, y) in enumerate(CURVE):
            jitter = 1 + 0.01 * ((r * 7 + i) % 3 - 1)
            levels.append(Level(concurrency=2 ** (len(CURVE) - i), num_prompts=8, completed=8, failed=0,
                                duration_s=1.0, output_throughput=y / 2, total_throughput=y,
                                per_gpu_throughput=y * scale * jitter, per_gpu_output_throughput=y / 2,
                                per_decode_gpu_output_throughput=y / 2, interactivity=x, median_ttft_ms=20.0,
                                median_tpot_ms=1000 / x, median_e2el_ms=100.0, p99_ttft_ms=40.0,
                                p99_tpot_ms=10.0, repeat=r))
    return Measurement(key="k", stack="cpu-vllm-base", engine="vllm", engine_version="0.32.0", gpu="cpu",
                       model="tiny", gpus=1, decode_gpus=1, workload=Workload(input_len=8, output_len=8,
                                                                                concurrency=[2, 4, 8]),
                       argv={"server": ["vllm", "serve", "/x/tiny", "--max-num-seqs", "256"]}, levels=levels,
                       status="ok", device="cpu: test x2", model_fingerprint="abc")


def test_a_baseline_round_trips_with_every_sample_one_level_per_line(tmp_path: Path) -> None:
    m = _measurement()
    path = baselines.write(baselines.path_for(tmp_path, "cpu", "vllm", "org/tiny", "base"),
                           baselines.from_measurement(m, "run1"))
    assert path == tmp_path / "cpu" / "vllm" / "org--tiny" / "base.yaml"
    text = path.read_text()
    level_lines = [ln for ln in text.splitlines() if ln.startswith("- {")]
    assert len(level_lines) == len(m.levels) == 9  # raw samples, not a mean
    back = baselines.load(path)
    assert back is not None and [lv.per_gpu_throughput for lv in back.levels] == [
        lv.per_gpu_throughput for lv in sorted(m.levels, key=lambda lv: (lv.repeat, lv.concurrency))]
    assert back.fingerprint.device == "cpu: test x2" and back.fingerprint.engine_version == "0.32.0"
    assert baselines.load(tmp_path / "none.yaml") is None


def test_a_broken_baseline_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    path = baselines.write(tmp_path / "b.yaml", baselines.from_measurement(_measurement(), "r"))
    data = yaml.safe_load(path.read_text())
    data["levels"][2]["interactivity"] = "fast"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(baselines.BaselineError) as exc:
        baselines.load(path)
    assert str(exc.value).startswith(f"{path}: field levels.2.interactivity:") and "\n" not in str(exc.value)
    path.write_text("levels: [\n")
    with pytest.raises(baselines.BaselineError, match=r"b\.yaml: line \d+: not valid YAML"):
        baselines.load(path)


def test_which_environment_differences_block_a_comparison() -> None:
    fp = baselines.fingerprint_of(_measurement())
    same_release = fp.model_copy(update={"engine_version": "0.32.0.dev5+g1234", "plugin_version": "9"})
    blocking, notes = baselines.compare_environments(fp, same_release)
    assert not blocking and any("same release" in n for n in notes) and any("pytest-infer" in n for n in notes)
    for field, value, why in (("engine_version", "0.33.0", "engine version 0.32.0 vs 0.33.0"),
                              ("device", "nvidia: H100, 550.54", "device"), ("workload", "x", "workload"),
                              ("model", "other", "model fingerprint")):
        blocking, _ = baselines.compare_environments(fp, fp.model_copy(update={field: value}))
        assert blocking and why in blocking[0]


def test_flag_changes_name_what_a_run_adds() -> None:
    base = {"server": ["vllm", "serve", "/a/model", "--max-num-seqs", "256"]}
    run = {"server": ["vllm", "serve", "/b/model", "--max-num-seqs", "256", "--max-num-seqs", "1"]}
    assert baselines.flag_changes(base, run) == ["server: +--max-num-seqs 1"]
    assert baselines.flag_changes(base, base) == []


def _sweeps(m: Measurement, name: str) -> Sweeps:
    return Sweeps.from_levels(name, [(lv.repeat, lv.concurrency, Point(lv.interactivity, lv.per_gpu_throughput))
                                     for lv in m.levels])


def test_the_regression_check_passes_a_rerun_and_fails_a_slowdown_with_numbers() -> None:
    stats = Stats(tolerance=0.03)
    base = _sweeps(_measurement(), "baseline")
    v = regression(_sweeps(_measurement(1.005), "base"), base, stats)
    assert v.check == "regression" and v.verdict == "pass", v.message
    v = regression(_sweeps(_measurement(0.9), "base"), base, stats)
    assert v.verdict == "fail" and v.worst is not None and v.worst.ratio == pytest.approx(0.9, rel=0.01)
    assert "base is slower than the baseline beyond the 3% margin at" in v.message
    assert re.search(r"ratio 0\.9\d\d \[0\.\d+, 0\.\d+\] \(95% t interval, n=3/3\)", v.message), v.message



def test_a_margin_inside_the_session_noise_says_no_repeats_decide_it() -> None:
    """A baseline is another session's: with the cpu calibration (session_noise 0.215) an unchanged run
    reads as low as 0.66 at 95% however many repeats, so at a 30% margin it is undecidable and says why
    instead of asking for a count; the cpu margin (0.50) lies beyond it and passes."""
    base = _sweeps(_measurement(), "baseline")
    run = _sweeps(_measurement(1.005), "base")
    v = regression(run, base, Stats(tolerance=0.30, session_noise=0.215))
    assert v.verdict == "inconclusive" and v.repeats_needed is None, v.message
    assert "between-session noise alone (±52% at 95%, session_noise 0.215) spans the margin" in v.message
    assert regression(run, base, Stats(tolerance=0.50, session_noise=0.215)).verdict == "pass"
    slow = regression(_sweeps(_measurement(0.16), "base"), base, Stats(tolerance=0.50, session_noise=0.215))
    assert slow.verdict == "fail" and slow.worst is not None and slow.worst.interval.high < 0.5, slow.message


# ---- the workflow, end to end on fake servers ------------------------------------------------------------

def _matrices(root: Path) -> Path:
    m = _fake_matrices(root, levels="[1, 4, 16]")  # a span wide enough that repeats overlap on a busy host
    w = (m / "workloads.yaml").read_text().replace("warmups: 0}", "warmups: 0, tolerance: 0.25}")
    (m / "workloads.yaml").write_text(w)  # the fake server's noise floor, as cpu's is calibrated
    # Tokens paced by sleeps long enough that a busy host (a real engine beside these tests) does not move
    # the fake servers' throughput: their A/A pairs stay A/A.
    e = (m / "engines" / "fake.yaml").read_text().replace('FAKE_TOKEN_DELAY: "0.001"', 'FAKE_TOKEN_DELAY: "0.01"')
    e = e.replace("common:\n", 'common:\n  env: {FAKE_TOKEN_DELAY: "0.02"}\n')
    (m / "engines" / "fake.yaml").write_text(e)
    # As on cpu, a deployment also leases a core for its front end and client: under -n 2 on two cores the
    # two stacks are measured one after the other, as their baselines were.
    g = (m / "gpus.yaml").read_text().replace("fp4: false}", "fp4: false, host_devices: 1}")
    (m / "gpus.yaml").write_text(g)
    return m


def _junit(path: Path) -> list[str]:
    """Test cases in name order with their outcome, message and properties; no times, hosts, dates."""
    root = ET.parse(path).getroot()
    out = []
    for case in sorted(root.iter("testcase"), key=lambda c: c.get("name") or ""):
        case.attrib.pop("time", None)
        out.append(ET.tostring(case, encoding="unicode"))
    for suite in root.iter("testsuite"):
        out.append(json.dumps({k: v for k, v in suite.attrib.items() if k not in ("time", "timestamp", "hostname")}))
    return out


def _body(md: str) -> list[str]:
    """The report below its header (a replay's header describes the replayed data, a live one this machine)."""
    return [ln for ln in md.splitlines()[1:] if "written 2" not in ln]


@needs_bench
def test_update_then_compare_in_parallel_then_a_slowdown_fails(pytester: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    matrices = _matrices(pytester.path / "m")
    reports, bdir = pytester.path / "r", pytester.path / "b"
    common = ["--gpu", "cpu", "--suite", "regression", "--infer-matrices", str(matrices), "--report-dir",
              str(reports), "--baseline-dir", str(bdir), "-p", "no:cacheprovider", "-rs",
              "--infer-lease-dir", str(pytester.path / "leases")]
    args = [*common, "--stack", "not slow"]
    # No baselines yet: skipped with the reason, before anything is launched; a failure when strict.
    none = pytester.runpytest_subprocess(*args)
    none.assert_outcomes(skipped=2)
    assert "no baseline for cpu-fake-base at" in none.stdout.str() and "launching" not in none.stdout.str()
    strict = pytester.runpytest_subprocess(*args, "--baseline-strict")
    strict.assert_outcomes(failed=2)
    assert strict.ret == pytest.ExitCode.TESTS_FAILED

    update = pytester.runpytest_subprocess(*args, "--baseline-update")
    update.assert_outcomes(passed=2)
    written = sorted(p.relative_to(bdir).as_posix() for p in bdir.rglob("*.yaml"))
    assert written == ["cpu/fake/tiny-glm4moe-mtp/base.yaml", "cpu/fake/tiny-glm4moe-mtp/fast.yaml"]

    # -n 2 against them: passes, each deployment launched once in the session, and the step summary gets
    # the matrix.
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    parallel = pytester.runpytest_subprocess(*args, "-n", "2", "--junitxml", str(pytester.path / "par.xml"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    # An A/A pair: never a failure; on a busy two-core host the fake servers' noise may leave a level
    # inconclusive (a skip saying how many repeats would decide it).
    outcomes = parallel.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("passed", 0) + outcomes.get("skipped", 0) == 2, outcomes
    assert all("inconclusive" in ln for ln in parallel.stdout.lines if ln.startswith("SKIPPED"))
    launches = [ln.split() for ln in (reports / "cpu" / "launches.log").read_text().splitlines()]
    runs = list(dict.fromkeys(ln[1] for ln in launches))
    assert len(runs) == 2  # the update's session, then this one (the skipped runs launched nothing)
    this = sorted(ln[-1] for ln in launches if ln[1] == runs[-1])
    assert this == ["cpu-fake-base", "cpu-fake-fast"], launches
    import datetime

    starts = sorted(datetime.datetime.fromisoformat(ln[0]) for ln in launches if ln[1] == runs[-1])
    assert (starts[1] - starts[0]).total_seconds() >= 5  # one deployment at a time on two cores (a sweep is longer)
    md_par = (reports / "cpu" / "regression.md").read_text()
    assert "# Regression matrix: cpu" in summary.read_text() and "`cpu-fake-fast`" in summary.read_text()
    assert "baseline there (tok/s/GPU)" in md_par and "`cpu-fake-base`" in md_par

    # The same results checked serially (replayed, so the numbers are the same ones): the same reports.
    serial = pytester.runpytest_subprocess(*args, "-p", "no:xdist", "--results", str(reports / "cpu" / "results"),
                                           "--junitxml", str(pytester.path / "ser.xml"))
    assert {k: v for k, v in serial.parseoutcomes().items() if k != "deselected"} == outcomes  # xdist omits it
    assert _junit(pytester.path / "par.xml") == _junit(pytester.path / "ser.xml")
    md_ser = (reports / "cpu" / "regression.md").read_text()
    assert md_ser.startswith("# Regression matrix: cpu (replayed)\n") and "engines `fake " in md_ser
    assert _body(md_ser) == _body(md_par)

    # A real slowdown: one sequence at a time (queued requests), flagged with its numbers and the flag.
    # (repeated --stack options are a union: base alone is asked for on its own)
    slow = pytester.runpytest_subprocess(*common, "--stack", "base", "--infer-engine-args", "--max-num-seqs 1")
    slow.assert_outcomes(failed=1)
    out = slow.stdout.str()
    assert "cpu-fake-base regression: base is slower than the baseline beyond the 25% margin at" in out, out
    assert "flags changed since the baseline: server: +--max-num-seqs 1" in out
    assert "(95% t interval, n=3/3)" in out


@needs_bench
def test_a_broken_or_foreign_baseline_is_reported_never_passed(pytester: pytest.Pytester) -> None:
    """Replayed results (no engine) against baselines that are broken, from another GPU, or missing."""
    matrices = _matrices(pytester.path / "m")
    reports, bdir = pytester.path / "r", pytester.path / "b"
    args = ["--gpu", "cpu", "--suite", "regression", "--infer-matrices", str(matrices), "--report-dir", str(reports),
            "--baseline-dir", str(bdir), "--stack", "base", "-p", "no:cacheprovider", "-rs",
            "--infer-lease-dir", str(pytester.path / "leases")]
    pytester.runpytest_subprocess(*args, "--baseline-update").assert_outcomes(passed=1)
    replay = [*args, "--results", str(reports / "cpu" / "results")]
    path = bdir / "cpu" / "fake" / "tiny-glm4moe-mtp" / "base.yaml"
    good = path.read_text()

    path.write_text(good.replace("device: 'cpu: ", "device: 'nvidia: H100 "))
    foreign = pytester.runpytest_subprocess(*replay)
    foreign.assert_outcomes(skipped=1)
    assert "is from another environment: device 'nvidia: H100" in foreign.stdout.str()
    pytester.runpytest_subprocess(*replay, "--baseline-strict").assert_outcomes(failed=1)

    path.write_text(re.sub(r'"per_gpu_throughput": [0-9.]+', '"per_gpu_throughput": "many"', good, count=1))
    broken = pytester.runpytest_subprocess(*replay)
    broken.assert_outcomes(failed=1)
    assert f"broken baseline: {path}: field levels.0.per_gpu_throughput:" in broken.stdout.str()
    assert "Traceback" not in broken.stdout.str()

    path.unlink()
    pytester.runpytest_subprocess(*replay).assert_outcomes(skipped=1)
    # The workload is judged on the stored one, not on the hash written beside it (a field added to Workload
    # later changes every hash); a stored workload with other lengths is foreign.
    stale = re.sub(r"(fingerprint: \{.*?workload: )[0-9a-f]+", r"\g<1>deadbeef0000", good, flags=re.DOTALL)
    assert stale != good
    path.write_text(re.sub(r"\n  output_len: \d+", "\n  output_len: 999", stale, count=1))
    other = pytester.runpytest_subprocess(*replay)
    other.assert_outcomes(skipped=1)
    assert "from another environment: workload" in other.stdout.str(), other.stdout.str()
    path.write_text(stale)
    again = pytester.runpytest_subprocess(*replay)
    # The same samples: compared (not skipped as missing or foreign) at a ratio of exactly 1. Whether the
    # interval clears the margin depends on how noisy the fake's repeats were on this host (pass when quiet,
    # inconclusive under load), never a failure.
    assert again.parseoutcomes().get("failed", 0) == 0 and "ratio 1.000" in again.stdout.str(), again.stdout.str()
    assert "no baseline" not in again.stdout.str() and "another environment" not in again.stdout.str()


def test_bad_engine_args_and_devices_are_usage_errors(pytester: pytest.Pytester) -> None:
    for flag, value, why in (("--infer-engine-args", "max-num-seqs 4", "expected engine flags"),
                             ("--infer-engine-args", "--x 'unclosed", "No closing quotation"),
                             ("--infer-devices", "0,0", "device 0 listed twice")):
        result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "regression", "--engine", "vllm",
                                               flag, value, "--infer-plan")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert why in result.stderr.str(), result.stderr.str()
