"""A/A calibration of the composability check on the real cpu engine.

One deployment (cpu-vllm-base) is launched once and measured 2 x PAIRS times, each measurement being
the suite's own sweep (workload repeats x concurrency levels). Each pair (A, B) goes through the same
check the suite runs (B against A): an A/A pair judged "fail" is a false alarm. Every level is saved as
it is measured (re-running resumes), so the verdicts can be recomputed under other margins.

    python benchmarks/aa_calibration.py --pairs 20 [--report-dir reports] [--cli-check]

--cli-check also runs `vllm bench serve` as a separate process against the same server at each level,
alternating with the in-process worker the plugin uses, and prints both output throughputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from pytest_infer.analysis.checks import Stats, composability
from pytest_infer.analysis.curve import Point, Sweeps
from pytest_infer.launch.local import LocalLauncher
from pytest_infer.matrix import Matrix, default_root
from pytest_infer.measure.load import BenchClient, Target, bench_argv, run_level
from pytest_infer.measure.metrics import Scraper
from pytest_infer.measure.results import Level
from pytest_infer.measure.runner import Runner
from pytest_infer.measure.store import Store
from pytest_infer.space import Stack
from pytest_infer.tinymodel import build_tiny_model, model_fingerprint


def sweeps(name: str, levels: list[Level]) -> Sweeps:
    return Sweeps.from_levels(name, [(lv.repeat, lv.concurrency, Point(lv.interactivity, lv.per_gpu_throughput))
                                     for lv in levels])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--report-dir", default="reports")
    ap.add_argument("--cli-check", action="store_true")
    args = ap.parse_args()

    matrix = Matrix(default_root())
    workload = matrix.workload("cpu")
    root = Path(args.report_dir).resolve()
    model = matrix.model_defaults["cpu"].model
    model_dir = build_tiny_model(root / "models" / model)
    out = root / "cpu" / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(matrix=matrix, store=Store(out / "store"), run_root=out / "runs", model=model,
                    engine_version="calibration", local_models={model: str(model_dir)},
                    model_fingerprint=model_fingerprint(model_dir))
    stack = Stack("cpu", "vllm", ())
    dep = runner.launchable(stack, out / "runs" / stack.id)
    saved = out / "aa-levels.json"
    done: dict[str, list[dict[str, object]]] = json.loads(saved.read_text()) if saved.exists() else {}
    client = BenchClient(out / "bench-worker")
    t0 = time.monotonic()
    with LocalLauncher(dep, log_dir=out / "runs" / "logs", timeout=900) as launcher:
        print(f"server healthy after {time.monotonic() - t0:.0f} s", flush=True)
        target = Target(dep.endpoint_url, dep.served_name, dep.model)
        if args.cli_check:
            cli_check(client, target, workload, out)
        for i in range(args.pairs):
            for side in "AB":
                name = f"{i:02d}{side}"
                got = done.setdefault(name, [])
                for rep in range(workload.repeats):
                    for conc in workload.concurrency:
                        if any(lv["repeat"] == rep and lv["concurrency"] == conc for lv in got):
                            continue
                        path = out / "bench" / f"{name}-c{conc}-r{rep}.json"
                        with Scraper({"server": dep.endpoint_url}) as scraper:
                            data = run_level(client, target, workload, conc, path)
                        level = Level.from_bench(data, dep.gpus, dep.decode_gpus, str(path))
                        if workload.interactivity_from == "server":
                            level.use_server_interactivity(scraper.result, str(path))
                        level.repeat, level.metrics = rep, scraper.result
                        got.append(level.model_dump())
                        saved.write_text(json.dumps(done))
                launcher.check_alive()
            print(f"pair {i}: {verdict_line(done, i, matrix)}  ({time.monotonic() - t0:.0f} s)", flush=True)
    client.close()
    summarize(done, matrix, args.pairs)


def verdict_line(done: dict[str, list[dict[str, object]]], i: int, matrix: Matrix, tol: float | None = None) -> str:
    t = matrix.thresholds
    stats = Stats(t.composability_tolerance if tol is None else tol, t.confidence, t.bootstrap_from)
    a = sweeps("A", [Level.model_validate(x) for x in done[f"{i:02d}A"]])
    b = sweeps("B", [Level.model_validate(x) for x in done[f"{i:02d}B"]])
    v = composability(b, [a], stats)
    w = v.worst
    return f"{v.verdict:12s} worst {w.interval if w else '-'} at {w.interactivity if w else 0:.1f} tok/s/user"


def summarize(done: dict[str, list[dict[str, object]]], matrix: Matrix, pairs: int) -> None:
    for tol in (matrix.thresholds.composability_tolerance, 0.10):
        lines = [verdict_line(done, i, matrix, tol) for i in range(pairs)]
        counts = {k: sum(ln.startswith(k) for ln in lines) for k in ("pass", "fail", "inconclusive")}
        print(f"margin {tol:.2f}: {pairs} A/A pairs: {counts['pass']} pass, {counts['inconclusive']} inconclusive, "
              f"{counts['fail']} fail -> false-alarm rate {counts['fail'] / pairs:.1%}")
    # Spread of single levels, to size repeats and margins.
    for conc in matrix.workload("cpu").concurrency:
        ys = [float(lv["per_gpu_throughput"]) for levels in done.values() for lv in levels  # type: ignore[arg-type]
              if lv["concurrency"] == conc]
        print(f"c={conc}: {len(ys)} levels, throughput mean {statistics.mean(ys):.0f} tok/s/device, "
              f"CV {statistics.stdev(ys) / statistics.mean(ys):.1%}")


def cli_check(client: BenchClient, target: Target, workload: object, out: Path) -> None:
    """The plugin's in-process `vllm bench serve` against the CLI, alternating, 3 runs each per level."""
    from pytest_infer.matrix import Workload

    assert isinstance(workload, Workload)
    for conc in workload.concurrency:
        got: dict[str, list[float]] = {"worker": [], "cli": []}
        for k in range(3):
            for how in ("worker", "cli"):
                path = out / "cli-check" / f"{how}-c{conc}-{k}.json"
                if how == "worker":
                    data = run_level(client, target, workload, conc, path)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    subprocess.run(bench_argv(target, workload, conc, path), check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    data = json.loads(path.read_text())
                got[how].append(float(data["output_throughput"]))  # type: ignore[arg-type]
        w, c = statistics.mean(got["worker"]), statistics.mean(got["cli"])
        print(f"cli-check c={conc}: output throughput worker {w:.1f} ({got['worker']}) vs CLI {c:.1f} "
              f"({got['cli']}) tok/s: difference {100 * (w - c) / c:+.1f}%", flush=True)


if __name__ == "__main__":
    main()
