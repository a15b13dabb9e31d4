"""Every bad input is one line naming what was wrong, exit code 4, before anything launches: the table.

Each case is what a new user typed or left on disk (options, matrices, result stores, directories). A
case asserts the exit code, that stderr holds exactly one non-empty line containing the expected text,
and that no traceback or INTERNALERROR reached the user. Add every new bad input you meet here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SHIPPED = Path(__file__).resolve().parent.parent / "matrices"
USAGE = pytest.ExitCode.USAGE_ERROR


def _matrices(root: Path) -> Path:
    for f in SHIPPED.rglob("*.yaml"):
        target = root / f.relative_to(SHIPPED)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.read_text())
    return root


def _edit(file: str, old: str, new: str) -> Callable[[Path], list[str]]:
    """A copy of the shipped matrices with one text edit in `file`."""
    def setup(tmp: Path) -> list[str]:
        root = _matrices(tmp / "m")
        path = root / file
        text = path.read_text()
        assert old in text, (file, old)
        path.write_text(text.replace(old, new, 1))
        return ["--infer-matrices", str(root)]
    return setup


def _write(file: str, content: str | bytes) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        root = _matrices(tmp / "m")
        path = root / file
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return ["--infer-matrices", str(root)]
    return setup


def _append(file: str, text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        root = _matrices(tmp / "m")
        (root / file).write_text((root / file).read_text() + text)
        return ["--infer-matrices", str(root)]
    return setup


def _plain_file(option: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "a-file").write_text("not a directory\n")
        return [f"{option}={tmp / 'a-file'}"]
    return setup


def _store(name: str, content: str) -> Callable[[Path], list[str]]:
    """A results store (as a run writes it) holding one broken record."""
    def setup(tmp: Path) -> list[str]:
        store = tmp / "store"
        store.mkdir()
        (store / name).write_text(content)
        return ["--results", str(store)]
    return setup


def _none(tmp: Path) -> list[str]:
    return []


def _kb_tail(versions: str = "''") -> str:
    return (f"    versions: {versions}\n    kind: runtime\n    issue: https://example.org/1\n"
            "    failure: seen\n")


def _dir_instead(tmp: Path, file: str) -> list[str]:
    root = _matrices(tmp / "m")
    (root / file).unlink()
    (root / file).mkdir()
    return ["--infer-matrices", str(root)]


def _rm_engines(tmp: Path) -> list[str]:
    root = _matrices(tmp / "m")
    for f in (root / "engines").iterdir():
        f.unlink()
    (root / "engines").rmdir()
    return ["--infer-matrices", str(root)]


KB = ("known_broken.yaml", "  - stack: wideep\n    engine: vllm\n    gpus: [cpu]\n")
RECORD = {"stack": "cpu-vllm-base", "engine": "vllm", "gpu": "cpu", "model": "m", "levels": "many"}

# (id, setup, args, expected text on the one stderr line)
CASES: list[tuple[str, Callable[[Path], list[str]], list[str], str]] = [
    # ---- options ----
    ("gpu-unknown", _none, ["--gpu", "h900"], "unknown GPU kind 'h900'"),
    ("gpu-empty", _none, ["--gpu="], "unknown GPU kind ''"),
    ("engine-unknown", _none, ["--gpu", "b200", "--engine", "trtllm"], "unknown engine 'trtllm' for b200"),
    ("engine-not-on-gpu", _none, ["--gpu", "cpu", "--engine", "sglang"],
     "unknown engine 'sglang' for cpu; valid: vllm"),
    ("suite-unknown", _none, ["--gpu", "cpu", "--suite", "speed"], "unknown suite 'speed'"),
    ("suite-without-gpu", _none, ["--suite", "composability"], "need --gpu KIND"),
    ("engine-without-gpu", _none, ["--engine", "vllm"], "need --gpu KIND"),
    ("stack-unknown-opt", _none, ["--gpu", "b200", "--stack", "fp4+eagle"], "unknown optimization 'eagle'"),
    ("stack-bad-expr", _none, ["--gpu", "b200", "--stack", "mtp and"], "--stack 'mtp and'"),
    ("stack-empty", _none, ["--gpu", "b200", "--stack="], "--stack '': empty"),
    ("stack-parens", _none, ["--gpu", "b200", "--stack", "(mtp or fp4"], "--stack '(mtp or fp4'"),
    ("repeats-one", _none, ["--gpu", "cpu", "--infer-repeats", "1"], "--infer-repeats 1: at least 2"),
    ("repeats-negative", _none, ["--gpu", "cpu", "--infer-repeats=-3"], "--infer-repeats -3: at least 2"),
    ("repeats-text", _none, ["--gpu", "cpu", "--infer-repeats", "many"], "--infer-repeats 'many': not a whole number"),
    ("devices-text", _none, ["--gpu", "cpu", "--infer-devices", "foo"], "--infer-devices 'foo'"),
    ("devices-missing", _none, ["--gpu", "cpu", "--infer-devices", "0,99"], "device 99 does not exist"),
    ("devices-empty", _none, ["--gpu", "cpu", "--infer-devices="], "--infer-devices '': no devices"),
    ("devices-negative", _none, ["--gpu", "cpu", "--infer-devices=-1"], "--infer-devices '-1'"),
    ("devices-reversed", _none, ["--gpu", "cpu", "--infer-devices", "1-0"], "--infer-devices '1-0'"),
    ("devices-duplicate", _none, ["--gpu", "cpu", "--infer-devices", "0,0"], "device 0 listed twice"),
    ("model-missing-path", _none, ["--gpu", "cpu", "--model", "/nonexistent/model"],
     "--infer-model '/nonexistent/model': no such directory"),
    ("model-relative-missing", _none, ["--gpu", "cpu", "--model", "./no-such-model"],
     "--infer-model './no-such-model': no such directory"),
    ("launch-timeout-negative", _none, ["--gpu", "cpu", "--infer-launch-timeout=-5"],
     "--infer-launch-timeout -5: must be above 0"),
    ("launch-timeout-zero", _none, ["--gpu", "cpu", "--infer-launch-timeout", "0"],
     "--infer-launch-timeout 0: must be above 0"),
    ("engine-args-port", _none, ["--gpu", "cpu", "--infer-engine-args", "--port 8000"],
     "--port is the launcher's"),
    ("engine-args-port-eq", _none, ["--gpu", "cpu", "--infer-engine-args=--port=8000"], "--port is the launcher's"),
    ("engine-args-host", _none, ["--gpu", "cpu", "--infer-engine-args", "--host 0.0.0.0"], "--host is the launcher's"),
    ("engine-args-name", _none, ["--gpu", "cpu", "--infer-engine-args", "--served-model-name x"],
     "--served-model-name is the launcher's"),
    ("engine-args-unknown", _none, ["--gpu", "cpu", "--infer-engine-args", "--bogus-flag 3"], "vllm refuses them"),
    ("engine-args-quote", _none, ["--gpu", "cpu", "--infer-engine-args", "'--max-num-seqs 4"], "No closing quotation"),
    ("engine-args-not-flag", _none, ["--gpu", "cpu", "--infer-engine-args", "max-num-seqs 4"], "expected engine flags"),
    ("engine-args-empty", _none, ["--gpu", "cpu", "--infer-engine-args="], "expected engine flags"),
    ("launcher-unknown", _none, ["--gpu", "cpu", "--launcher", "kubernetes"],
     "--infer-launcher 'kubernetes': valid: local, slurm"),
    ("slurm-queue-timeout", _none, ["--gpu", "cpu", "--launcher", "slurm", "--infer-slurm-queue-timeout=-1"],
     "--infer-slurm-queue-timeout -1: must be above 0"),
    ("slurm-time-format", _none, ["--gpu", "cpu", "--launcher", "slurm", "--infer-slurm-time", "soon"],
     "--infer-slurm-time 'soon'"),
    ("slurm-options-local", _none, ["--gpu", "cpu", "--infer-slurm-partition", "gpu"],
     "--infer-slurm-partition needs --infer-launcher slurm"),
    ("baseline-update-replay", lambda tmp: ["--results", str(SHIPPED.parent / "tests" / "data")],
     ["--gpu", "cpu", "--suite", "regression", "--baseline-update"],
     "--infer-baseline-update: baselines are written from live measurements only"),
    # ---- directories ----
    ("report-dir-file", _plain_file("--report-dir"), ["--gpu", "cpu"], "is a file, not a directory"),
    ("report-dir-readonly", _none, ["--gpu", "cpu", "--infer-plan", "--report-dir=/proc/infer-reports"],
     "cannot be created"),
    ("baseline-dir-file", _plain_file("--baseline-dir"), ["--gpu", "cpu", "--suite", "regression"],
     "is a file, not a directory"),
    ("lease-dir-file", _plain_file("--infer-lease-dir"), ["--gpu", "cpu"], "is a file, not a directory"),
    ("history-dir-file", _plain_file("--infer-history"), ["--gpu", "cpu"], "--infer-history"),
    ("prices-unknown-gpu", _edit("prices.yaml", "  cpu: {", "  tpu7: {"), ["--gpu", "cpu"],
     "prices.yaml: key prices.tpu7: unknown GPU kind"),
    ("prices-negative", _edit("prices.yaml", "cpu: {committed: 0.01", "cpu: {committed: -1"), ["--gpu", "cpu"],
     "prices.yaml: key prices.cpu.committed"),
    ("lease-dir-readonly", _none, ["--gpu", "cpu", "--infer-plan", "--infer-lease-dir=/proc/infer-leases"],
     "cannot be created"),
    ("matrices-missing", _none, ["--gpu", "cpu", "--infer-matrices", "/nonexistent/m"], "/nonexistent/m"),
    ("matrices-file", _plain_file("--infer-matrices"), ["--gpu", "cpu"], "is a file, not a directory"),
    ("results-missing", _none, ["--gpu", "cpu", "--results", "/nonexistent/r"], "/nonexistent/r"),
    ("results-empty-dir", lambda tmp: ["--results", str(tmp)], ["--gpu", "cpu"], "no *.json or *.jsonl result files"),
    # ---- matrices ----
    ("gpus-not-utf8", _write("gpus.yaml", b"gpus:\n  cpu: {vendor: \xff\xfe}\n"), ["--gpu", "cpu"],
     "gpus.yaml: not UTF-8 text"),
    ("gpus-broken-yaml", _edit("gpus.yaml", "gpus:", "gpus: ["), ["--gpu", "cpu"], "gpus.yaml: line"),
    ("gpus-bad-type", _edit("gpus.yaml", "gpus_per_node: 8", "gpus_per_node: eight"), ["--gpu", "mi355x"],
     "gpus.yaml: key gpus.mi250x.gpus_per_node"),
    ("gpus-empty-file", _write("gpus.yaml", ""), ["--gpu", "cpu"], "gpus.yaml"),
    ("gpus-is-dir", lambda tmp: _dir_instead(tmp, "gpus.yaml"), ["--gpu", "cpu"], "gpus.yaml: not a file"),
    ("models-unknown-default", _edit("models.yaml", "model: deepseek-r1-0528, tensor_parallel: 8}",
                                     "model: r2, tensor_parallel: 8}"), ["--gpu", "mi300x"],
     "models.yaml: key defaults.mi300x.model"),
    ("workloads-empty-concurrency", _edit("workloads.yaml", "concurrency: [4, 16, 64]", "concurrency: []"),
     ["--gpu", "cpu"], "workloads.yaml: key workloads"),
    ("workloads-negative-concurrency", _edit("workloads.yaml", "concurrency: [4, 16, 64]", "concurrency: [-4, 16]"),
     ["--gpu", "cpu"], "workloads.yaml: key workloads"),
    ("known-broken-unknown-opt", _append(KB[0], KB[1].replace("wideep", "eagle") + _kb_tail()),
     ["--gpu", "cpu"], "known_broken.yaml: key known_broken."),
    ("known-broken-bad-versions", _append(KB[0], KB[1] + _kb_tail(versions="'>>0.3'")), ["--gpu", "cpu"],
     "known_broken.yaml: key known_broken."),
    ("known-broken-bad-expr", _append(KB[0], KB[1].replace("wideep", "'wideep and'") + _kb_tail()),
     ["--gpu", "cpu"], "known_broken.yaml: key known_broken."),
    ("known-broken-unknown-engine", _append(KB[0], KB[1].replace("vllm", "trtllm-x") + _kb_tail()),
     ["--gpu", "cpu"], "known_broken.yaml: key known_broken."),
    ("engines-dir-missing", lambda tmp: _rm_engines(tmp), ["--gpu", "cpu"], "engines: no engine files"),
    ("engine-broken-yaml", _edit("engines/vllm.yaml", "optimizations:\n", "optimizations: [\n"), ["--gpu", "cpu"],
     "engines/vllm.yaml: line"),
    ("engine-unknown-placeholder", _edit("engines/vllm.yaml", '"${served_name}"', '"${served}"'),
     ["--gpu", "cpu", "--suite", "smoke", "--infer-plan"], "unknown placeholder ${served}"),
    ("optimizations-empty", _write("optimizations.yaml", "optimizations: {}\n"), ["--gpu", "cpu"],
     "optimizations.yaml"),
    # ---- stored and replayed results ----
    ("store-truncated-json", _store("cpu-vllm-base-0123456789ab.json", '{"stack": "cpu-vllm-base", "lev'),
     ["--gpu", "cpu"], "cpu-vllm-base-0123456789ab.json"),
    ("store-mistyped-record", _store("cpu-vllm-base-0123456789ab.json", json.dumps(RECORD)),
     ["--gpu", "cpu"], "cpu-vllm-base-0123456789ab.json"),
    ("raw-result-truncated", _store("bench.json", '{"completed": 10, "failed": 0, "median_tpot'),
     ["--gpu", "cpu"], "bench.json"),
]


@pytest.mark.parametrize(("setup", "args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_4(pytester: pytest.Pytester, setup: Callable[[Path], list[str]],
                                            args: list[str], expected: str) -> None:
    extra = setup(pytester.path)
    only = [] if "--infer-plan" in args else ["--collect-only"]  # a plan writes: its directories are made
    result = pytester.runpytest_subprocess(*args, *extra, *only, "-q", "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    errors = [ln for ln in result.errlines if ln.strip()]
    assert result.ret == USAGE, (result.ret, errors, result.outlines[-5:])
    # One line; or, for files read in bulk, one line that ends with ":" and then one line per file named.
    assert len(errors) == 1 or (errors[0].endswith(":") and all(".json" in e for e in errors[1:])), errors
    assert expected in "\n".join(errors), errors


def test_the_table_is_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60, len(CASES)


def test_a_path_option_with_a_space_keeps_the_rootdir(pytester: pytest.Pytester, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`--report-dir /dir` and `--report-dir=/dir` give the same default baselines/ (pytest's own rootdir
    is chosen before it knows plugin options, and takes the spaced value for a path)."""
    pytester.makeini("[pytest]\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (pytester.path / "probe_plugin.py").write_text(
        "from pytest_infer.plugin import session_key\n\n\n"
        "def pytest_collection_finish(session):\n"
        "    print('BASELINES', session.config.stash[session_key].run.options.baseline_dir)\n")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    seen = []
    for form in (["--report-dir", str(outside)], [f"--report-dir={outside}"],
                 ["--infer-report-dir", str(outside)]):
        result = pytester.runpytest_subprocess("--gpu", "cpu", "--suite", "regression", "--collect-only", "-q",
                                               "-s", "-p", "probe_plugin", *form)
        seen.append([ln for ln in result.outlines if ln.startswith("BASELINES")])
    assert seen == [[f"BASELINES {pytester.path / 'baselines'}"]] * 3, seen


def test_a_killed_engine_core_is_named_as_the_root_cause(tmp_path: Path) -> None:
    """SIGKILL of vLLM 0.32's engine core raises nothing: its front end's lines are the cause (the text of
    vllm/v1/engine/core_client.py and exceptions.py), and an exception above them still wins."""
    from pytest_infer.measure.runner import root_causes

    (tmp_path / "server.log").write_text(
        "(APIServer pid=11) INFO 12-03 09:00:01 [core_client.py:818] [shutdown] MPClient: engine core exited "
        "unexpectedly; starting cleanup\n"
        "(APIServer pid=11) ERROR 12-03 09:00:01 [serving.py:1] vllm.v1.engine.exceptions.EngineDeadError: "
        "EngineCore encountered an issue. See stack trace (above) for the root cause.\n")
    assert root_causes(tmp_path) == "[shutdown] MPClient: engine core exited unexpectedly; starting cleanup"
    (tmp_path / "engine.log").write_text("RuntimeError: CPU out of memory allocating the KV cache\n")
    assert root_causes(tmp_path).startswith("RuntimeError: CPU out of memory")


@pytest.mark.parametrize(("args", "expected"), [
    (["--stack", "base", "--stack", "fp4+mtp"], ["mi355x-vllm-base", "mi355x-vllm-fp4+mtp"]),  # a union
    (["--stack", "base", "--engine", "vllm"], ["mi355x-vllm-base"]),  # the duplicate --engine folded
])
def test_repeated_options_mean_what_they_say(pytester: pytest.Pytester, args: list[str],
                                             expected: list[str]) -> None:
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--engine", "vllm",
                                           *args, "--collect-only", "-q")
    ids = [ln.split("[")[1].rstrip("]") for ln in result.outlines if "test_composability[" in ln]
    assert ids == expected, result.outlines


def test_a_plan_under_xdist_is_written_by_one_process(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--engine", "vllm",
                                           "--infer-plan", "-n", "2", "--report-dir", str(pytester.path / "r"))
    assert result.ret == 0
    result.stdout.fnmatch_lines(["plan: 44 role(s) and their clients, 16 stack(s), written to *plan.json"])
    assert len(json.loads((pytester.path / "r" / "mi355x" / "plan.json").read_text())) == 44 + 16  # + clients


def test_a_broken_record_in_the_run_store_is_set_aside_and_measured_again(tmp_path: Path) -> None:
    from pytest_infer.store.records import ResultError
    from pytest_infer.store.store import Store

    (tmp_path / "cpu-vllm-base-0123456789ab.json").write_text('{"stack": "cpu-vllm-base", "lev')  # a torn write
    store = Store(tmp_path)
    assert store.load("cpu-vllm-base", "0123456789ab") is None
    assert (tmp_path / "cpu-vllm-base-0123456789ab.json.broken").exists()
    assert len(store.set_aside) == 1 and "cpu-vllm-base-0123456789ab.json: not a readable record" in store.set_aside[0]
    (tmp_path / "cpu-vllm-mtp-0123456789ab.json").write_text("[]")
    with pytest.raises(ResultError, match=r"cpu-vllm-mtp-0123456789ab\.json: not a readable record"):
        Store(tmp_path, read_only=True).load("cpu-vllm-mtp", "0123456789ab")  # a replayed store is not changed


def test_a_model_name_not_in_the_matrices_is_said_to_be_a_hub_id(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--gpu", "b200", "--engine", "vllm", "--suite", "smoke",
                                           "--model", "org/some-model", "--collect-only")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["pytest-infer: model 'org/some-model' is not in *models.yaml and not a directory "
                                 "here: taken as a hub id*"])
