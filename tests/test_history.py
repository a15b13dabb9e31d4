"""The history directory, compatibility.md and trends.md (issue 17, parts 2-4), on real cpu numbers."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from pytest_infer.analysis.checks import Stats
from pytest_infer.history import compatibility, trends
from pytest_infer.history.record import Entry, Level, Point
from pytest_infer.history.store import History

HERE = Path(__file__).resolve().parent
# Real interleaved cpu measurements of base, disagg, mtp and disagg+mtp (tests/data/efficiency, 2026-12-03).
REAL = json.loads((HERE / "data" / "efficiency" / "cpu-disagg-mtp-2026-12-03.json").read_text())["stacks"]
STORE = HERE / "data" / "efficiency" / "store"
pytest_plugins = ["pytester"]
CPU = Stats(tolerance=0.3, confidence=0.95, bootstrap_from=10, session_noise=0.215)  # the cpu regression margin


def _levels(name: str) -> list[Level]:
    return [Level(**{k: lv[k] for k in ("concurrency", "repeat", "interactivity", "per_gpu_throughput")})
            for lv in REAL[name]]


def _entry(when: str, levels: list[Level], **settings: str) -> Entry:
    base = Point(stack="cpu-vllm-base", label="base", opts=[], outcome="PASS", levels=levels)
    return Entry(when=when, source="live", suite="composability", gpu="cpu", engine="vllm", engine_version="0.32.0",
                 model="tiny", settings={"engine args": "", **settings}, points=[base])


def _add(root: str, when: str) -> int:
    return len(History(Path(root)).add([_entry(when, _levels("cpu-vllm-base"))]))


def test_adding_the_same_run_twice_adds_nothing_and_concurrent_writers_are_safe(tmp_path: Path) -> None:
    h = History(tmp_path / "h")
    one = _entry("2026-12-03T10:00:00+00:00", _levels("cpu-vllm-base"))
    assert len(h.add([one])) == 1
    assert h.add([one]) == []  # the same results again: nothing
    assert h.add([one.model_copy(update={"when": "2026-12-04T10:00:00+00:00"})]) == []  # re-dated copy: the same
    # Eight adds from four processes add the same new entry at once: one file, no temporary left behind.
    other = _levels("cpu-vllm-mtp")
    h2 = tmp_path / "h2"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        added = pool.starmap(_add, [(str(h2), f"2026-12-03T1{i}:00:00+00:00") for i in range(8)])
    assert sum(added) == 1 and len(list(h2.rglob("*.json"))) == 1 and not list(h2.rglob(".adding-*"))
    assert len(h.add([_entry("2026-12-05T10:00:00+00:00", other)])) == 1
    assert [len(e.points[0].levels) for e in h.read().entries] == [9, 9]


def test_a_broken_entry_is_reported_never_fatal(tmp_path: Path) -> None:
    h = History(tmp_path)
    h.add([_entry("2026-12-03T10:00:00+00:00", _levels("cpu-vllm-base"))])
    (tmp_path / "cpu" / "vllm" / "bad.json").write_text('{"when": 3}')
    (tmp_path / "cpu" / "vllm" / "cut.json").write_text('{"when": "2026')
    got = h.read()
    assert len(got.entries) == 1 and len(got.broken) == 2
    assert any("bad.json: field " in b for b in got.broken) and any("cut.json" in b for b in got.broken), got.broken


def test_a_real_slowdown_is_called_out_with_the_setting_and_a_rerun_is_not(tmp_path: Path) -> None:
    """Neighbours judged as a baseline is (the cpu regression margin and session noise): base's real levels
    against themselves re-measured in the same rounds (disagg+mtp's rounds are other deployments, so the
    repeat of base is base); then disagg's real curve (~7x slower at matched interactivity) standing in for
    base under a changed engine argument."""
    runs = [_entry("2026-12-03T10:00:00+00:00", _levels("cpu-vllm-base")),
            _entry("2026-12-03T11:00:00+00:00", _levels("cpu-vllm-base")[::-1]),
            _entry("2026-12-03T12:00:00+00:00", _levels("cpu-vllm-disagg"), **{"engine args": "--max-num-seqs 1"})]
    runs[1].points[0].levels[0].per_gpu_throughput *= 1.01  # a different run, with the same numbers
    page, changes = trends.write(runs, [], tmp_path / "h", tmp_path / "out", lambda gpu: CPU)
    assert len(changes) == 1, [c.line() for c in changes]
    line = changes[0].line()
    assert line.startswith("- cpu-vllm-base: per-GPU throughput ") and "engine args '' -> '--max-num-seqs 1'" in line
    assert "between 2026-12-03T11:00:00+00:00 and 2026-12-03T12:00:00+00:00" in line, line
    text = page.read_text()
    assert "## Changes beyond the noise" in text and line in text and "(trends-vllm-base.png)" in text
    assert (tmp_path / "out" / "trends-vllm-base.png").read_bytes()[:4] == b"\x89PNG"
    quiet, none = trends.write(runs[:2], [], tmp_path / "h", tmp_path / "out2", lambda gpu: CPU)
    assert none == [] and "None: every change between neighbouring runs is within the noise." in quiet.read_text()


def test_ratio_and_efficiency_moves_are_called_out_when_their_intervals_part() -> None:
    def run(when: str, ratio: tuple[float, float, float], eff: tuple[float, float, float], version: str) -> Entry:
        p = Point(stack="mi355x-sglang-fp4+disagg", label="fp4+disagg", opts=["fp4", "disagg"], outcome="FAIL",
                  ratio=ratio[0], low=ratio[1], high=ratio[2], interactivity=60.0,
                  efficiency=eff[0], efficiency_low=eff[1], efficiency_high=eff[2], efficiency_interactivity=60.0)
        return Entry(when=when, source="live", suite="composability", gpu="mi355x", engine="sglang",
                     engine_version=version, model="m", points=[p])

    a = run("2026-11-20", (0.78, 0.74, 0.82), (0.60, 0.55, 0.66), "0.5.23")
    b = run("2026-11-21", (1.04, 0.99, 1.09), (0.63, 0.57, 0.70), "0.5.24")
    s = trends.series_of([b, a])[("mi355x", "sglang", "mi355x-sglang-fp4+disagg")]
    got = [c.line() for c in trends.neighbour_changes("mi355x-sglang-fp4+disagg", s, CPU)]
    assert got == ["- mi355x-sglang-fp4+disagg: ratio to best part 0.78 [0.74, 0.82] -> 1.04 [0.99, 1.09] at 60.0 "
                   "tok/s/user between 2026-11-20 and 2026-11-21; sglang 0.5.23 -> 0.5.24 (neighbours)"], got


def test_compatibility_of_the_real_cpu_run(pytester: pytest.Pytester) -> None:
    """The four real measurements replayed: the disagg x mtp cell carries its ratio and efficiency (the
    numbers in the composability report), the wideep cells are known broken with their link, fp4 is
    unsupported; the replay is dated by its data and lands in the history once."""
    history = pytester.path / "h"
    args = ["--gpu", "cpu", "--suite", "composability", "--results", str(STORE), "--report-dir",
            str(pytester.path / "r"), "--infer-history", str(history), "-p", "no:cacheprovider"]
    first = pytester.runpytest_subprocess(*args)
    assert first.ret == 1, first.stdout.str()[-2000:]
    first.stdout.fnmatch_lines(["history: *: 1 run(s) added", "compatibility: */cpu/compatibility.md"])
    again = pytester.runpytest_subprocess(*args)
    again.stdout.fnmatch_lines(["history: *: 0 run(s) added, 1 already there"])
    md = (pytester.path / "r" / "cpu" / "compatibility.md").read_text()
    rows = {ln.split("|")[1].strip(" *"): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in md.splitlines() if ln.startswith("| **")}
    assert list(rows) == ["fp4", "disagg", "wideep", "mtp"], md
    disagg_mtp = rows["mtp"][1]
    (entry,) = History(history).read().entries
    pair = entry.point("disagg+mtp")
    assert pair is not None and pair.ratio is not None and pair.efficiency is not None
    assert f"{pair.ratio:.2f} [{pair.low:.2f}, {pair.high:.2f}] vs base" in disagg_mtp, disagg_mtp
    assert f"efficiency {pair.efficiency:.2f} [{pair.efficiency_low:.2f}, " in disagg_mtp, disagg_mtp
    assert disagg_mtp.startswith(("**loses**", "**partial**")), disagg_mtp
    assert rows["wideep"][1].startswith("**known broken** ([upstream](https://github.com/vllm-project/vllm/")
    assert rows["mtp"][2].startswith("**known broken**") and rows["fp4"][0] == "**unsupported**"
    assert rows["disagg"][1].startswith("**loses** 0.14 [")  # disagg alone against base
    assert "- `disagg+wideep+mtp`: **known broken**" in md
    assert entry.when == "2026-12-03" and entry.source.startswith("replay ") and entry.engine_version == "0.32.0+cpu"
    across = (pytester.path / "r" / "cpu" / "compatibility-all.md").read_text()
    assert "## cpu, vllm 0.32.0+cpu" in across


def test_cells_name_the_crossover_of_a_partial_win() -> None:
    p = Point(stack="x", label="disagg+mtp", opts=["disagg", "mtp"], outcome="FAIL", ratio=0.6, low=0.5, high=0.7,
              tolerance=0.05, best_part="mtp", intervals={"30.00": [1.2, 1.1, 1.3], "80.00": [0.6, 0.5, 0.7]})
    assert compatibility.kind_of(p) == "partial"
    assert compatibility.cell(p) == ("**partial** 0.60 [0.50, 0.70] vs mtp (holds at 30.0; loses at 80.0 "
                                     "tok/s/user)")
    assert compatibility.kind_of(p.model_copy(update={"intervals": {"80.00": [0.6, 0.5, 0.7]}})) == "loses"


def test_a_longer_series_gets_its_change_point_where_neighbours_see_nothing() -> None:
    """Point estimates (one sample per level: no interval) never part between neighbours; over six nights the
    change point method finds the step, with what changed on the night it happened."""
    ratios = [0.78, 0.80, 0.79, 1.03, 1.05, 1.04]
    runs = [Entry(when=f"2026-11-2{i}", source="live", suite="composability", gpu="mi355x", engine="sglang",
                  engine_version="0.5.23" if i < 3 else "0.5.24", model="m",
                  points=[Point(stack="mi355x-sglang-fp4+disagg+wideep", label="fp4+disagg+wideep",
                                opts=["fp4", "disagg", "wideep"], outcome="FAIL", ratio=r, low=r, high=r,
                                interactivity=60.0)]) for i, r in enumerate(ratios)]
    (s,) = trends.series_of(runs).values()
    key = "mi355x-sglang-fp4+disagg+wideep"
    assert trends.neighbour_changes(key, s, CPU) == []
    (cp,) = trends.changepoint_changes(key, s, 0.01)
    assert cp.line() == ("- mi355x-sglang-fp4+disagg+wideep: ratio to best part 0.79 -> 1.04 (means of the runs "
                         "either side) between 2026-11-22 and 2026-11-23; sglang 0.5.23 -> 0.5.24 (change point)")


def test_replaying_dated_inferencex_files_adds_dated_points_and_undated_ones_are_said(
        pytester: pytest.Pytester) -> None:
    """The 16-GPU disagg `vllm bench serve` files carry their own `date` (20260428-...): their replay lands in
    the history at that day, each model a point of its own; InferenceX's aggregated files carry none, and
    the run says they were not added rather than dating them today."""
    data = HERE / "data" / "inferencex"
    res = pytester.path / "res"
    for name in ("disagg-16gpu-gpt-oss-120b", "disagg-16gpu-minimax-m2.5"):
        shutil.copytree(data / name, res / name)
        (res / name / "infer-results.yaml").write_text(
            f"- {{files: 'concurrency_*.json', stack: disagg, gpus: 16, decode_gpus: 8, variant: {name}}}\n")
    history = pytester.path / "h"
    out = pytester.runpytest_subprocess("--gpu", "b200", "--suite", "composability", "--results", str(res),
                                        "--report-dir", str(pytester.path / "r"), "--infer-history", str(history),
                                        "-p", "no:cacheprovider")
    out.stdout.fnmatch_lines(["history: *: 1 run(s) added"])
    (entry,) = History(history).read().entries
    assert entry.when == "2026-04-28" and entry.gpu == "b200" and entry.source == f"replay {res}"
    assert sorted((p.variant, p.date, len(p.levels)) for p in entry.points if p.levels) == [
        ("disagg-16gpu-gpt-oss-120b", "2026-04-28", 8), ("disagg-16gpu-minimax-m2.5", "2026-04-28", 8)]
    trend = (pytester.path / "r" / "b200" / "trends.md").read_text()
    assert "### `b200-vllm-disagg@disagg-16gpu-minimax-m2.5`" in trend and "| 2026-04-28 " in trend
    undated = pytester.path / "agg"
    undated.mkdir()
    for f in (data / "single-node").glob("agg_kimik2.5_*.json"):
        shutil.copy(f, undated / f.name)
    second = pytester.runpytest_subprocess("--gpu", "mi355x", "--suite", "composability", "--results", str(undated),
                                           "--report-dir", str(pytester.path / "r"), "--infer-history", str(history),
                                           "-p", "no:cacheprovider")
    second.stdout.fnmatch_lines(["history: not added: the replayed data of 1 engine(s) carries no dates"])
    assert len(History(history).read().entries) == 1
