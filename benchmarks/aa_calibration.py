"""A/A calibration of the composability check on the real cpu engine.

One deployment (cpu-vllm-base) is launched once and measured 2 x PAIRS times, each measurement being
the suite's own sweep (workload repeats x concurrency levels). The two sweeps of a pair take turns
level by level in rounds, as the suite's interleaved deployments do, so the check compares them round
by round. Each pair (A, B) goes through the same check the suite runs (B against A): an A/A pair
judged "fail" is a false alarm. Every level is saved as
it is measured (re-running resumes), so the verdicts can be recomputed under other margins.

    python benchmarks/aa_calibration.py --pairs 20 [--repeats N] [--report-dir reports] [--cli-check]

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
from pytest_infer.analysis.curve import Sweeps
from pytest_infer.launch.local import LocalLauncher
from pytest_infer.matrix import Matrix, default_root
from pytest_infer.measure.load import BenchClient, Target, bench_argv, run_level
from pytest_infer.measure.metrics import Scraper
from pytest_infer.measure.runner import Runner
from pytest_infer.paths import RunPaths
from pytest_infer.space import Stack
from pytest_infer.store.records import Level
from pytest_infer.store.store import Store
from pytest_infer.tiny.model import build_tiny_model, model_fingerprint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--report-dir", default="reports")
    ap.add_argument("--repeats", type=int, help="rounds per pair (default: the cpu workload's repeats)")
    ap.add_argument("--cli-check", action="store_true")
    ap.add_argument("--summary-only", action="store_true", help="recompute the verdicts from saved levels")
    args = ap.parse_args()

    matrix = Matrix(default_root())
    workload = matrix.workload("cpu")
    if args.repeats:  # as --infer-repeats does for the suite
        workload = workload.model_copy(update={"repeats": args.repeats})
    root = Path(args.report_dir).resolve()
    model = matrix.model_defaults["cpu"].model
    model_dir = build_tiny_model(root / "models" / model)
    out = root / "cpu" / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(matrix=matrix, store=Store(out / "store"), paths=RunPaths(out.parent, out.name), model=model,
                    engine_version="calibration", local_models={model: str(model_dir)},
                    model_fingerprint=model_fingerprint(model_dir))
    stack = Stack("cpu", "vllm", ())
    dep = runner.launchable(stack, out / "runs" / stack.id)
    saved = out / "aa-levels.json"
    done: dict[str, list[dict[str, object]]] = json.loads(saved.read_text()) if saved.exists() else {}
    if args.summary_only:
        pairs = sum(f"{i:02d}B" in done and len(done[f"{i:02d}B"]) == len(workload.concurrency) * workload.repeats
                    for i in range(args.pairs))
        summarize(done, matrix, pairs)
        return
    client = BenchClient(out / "bench-worker")
    t0 = time.monotonic()
    with LocalLauncher(dep, log_dir=out / "runs" / "logs", timeout=900) as launcher:
        print(f"server healthy after {time.monotonic() - t0:.0f} s", flush=True)
        target = Target(dep.endpoint_url, dep.served_name, dep.model)
        if args.cli_check:
            cli_check(client, target, workload, out)
        for i in range(args.pairs):
            # A and B take turns level by level (snake order), each round tagged, as the suite's
            # interleaved deployments do: the pair is compared round by round.
            order = 0
            for rep in range(workload.repeats):
                for conc in workload.concurrency:
                    for side in ("AB" if order % 2 == 0 else "BA"):
                        name = f"{i:02d}{side}"
                        got = done.setdefault(name, [])
                        if any(lv["repeat"] == rep and lv["concurrency"] == conc for lv in got):
                            continue
                        path = out / "bench" / f"{name}-c{conc}-r{rep}.json"
                        with Scraper({"server": dep.endpoint_url}) as scraper:
                            data = run_level(client, target, workload, conc, path)
                        level = Level.from_bench(data, dep.gpus, dep.decode_gpus, str(path))
                        if workload.interactivity_from == "server":
                            level.use_server_interactivity(scraper.result, str(path))
                        level.repeat, level.metrics, level.block = rep, scraper.result, f"{i:02d}-r{rep}"
                        got.append(level.model_dump())
                        saved.write_text(json.dumps(done))
                    order += 1
                launcher.check_alive()
            print(f"pair {i}: {verdict_line(done, i, matrix)}  ({time.monotonic() - t0:.0f} s)", flush=True)
    client.close()
    if args.pairs:
        summarize(done, matrix, args.pairs)


def _pair(done: dict[str, list[dict[str, object]]], i: int) -> tuple[Sweeps, Sweeps]:
    return Sweeps.from_records("A", done[f"{i:02d}A"]), Sweeps.from_records("B", done[f"{i:02d}B"])


def _probe(lv: dict[str, object]) -> float | None:
    host = (lv.get("metrics") or {}).get("host", {})  # type: ignore[attr-defined]
    return float(host["probe_ms"]) if "probe_ms" in host else None


def probe_normalized(done: dict[str, list[dict[str, object]]]) -> dict[str, list[dict[str, object]]] | None:
    """Every level scaled by its host speed probe (both axes: a slower machine is slower on both), or
    None when the levels were measured before the probe existed."""
    import statistics as st

    probes = [p for levels in done.values() for lv in levels if (p := _probe(lv)) is not None]
    if not probes or len(probes) < sum(len(v) for v in done.values()):
        return None
    ref = st.median(probes)
    return {name: [{**lv, "interactivity": float(lv["interactivity"]) * _probe(lv) / ref,  # type: ignore[arg-type,operator]
                    "per_gpu_throughput": float(lv["per_gpu_throughput"]) * _probe(lv) / ref}  # type: ignore[arg-type,operator]
                   for lv in levels] for name, levels in done.items()}


def verdict(done: dict[str, list[dict[str, object]]], i: int, stats: Stats) -> tuple[str, str]:
    a, b = _pair(done, i)
    v = composability(b, [a], stats)
    w = v.worst
    return v.verdict, (f"{v.verdict:12s} worst {w.interval if w else '-'} "
                       f"at {w.interactivity if w else 0:.1f} tok/s/user")


def verdict_line(done: dict[str, list[dict[str, object]]], i: int, matrix: Matrix) -> str:
    return verdict(done, i, stats_for(matrix))[1]


def stats_for(matrix: Matrix, tol: float | None = None, noise: float | None = None) -> Stats:
    t, w = matrix.thresholds, matrix.workload("cpu")
    tol = tol if tol is not None else matrix.margins("cpu")[0]
    return Stats(tol, t.confidence, t.bootstrap_from, w.session_noise if noise is None else noise)


def session_noise(done: dict[str, list[dict[str, object]]], pairs: list[int]) -> float:
    """Log-SD of an A/A ratio beyond what the repeats explain: E[d^2] - E[SE_within^2] over the matched
    levels of the pairs (the true log ratio of an A/A pair is 0)."""
    import math

    from pytest_infer.analysis.checks import _grid

    d2, se2 = [], []
    for i in pairs:
        a, b = _pair(done, i)
        for x in _grid(b, [a]):
            lb, la = [math.log(y) for y in b.at(x)], [math.log(y) for y in a.at(x)]
            d2.append((statistics.mean(lb) - statistics.mean(la)) ** 2)
            se2.append(statistics.variance(lb) / len(lb) + statistics.variance(la) / len(la))
    return math.sqrt(max(0.0, statistics.mean(d2) - statistics.mean(se2)))


def count_on(done: dict[str, list[dict[str, object]]], ids: list[int], stats: Stats) -> str:
    got = [verdict(done, i, stats)[0] for i in ids]
    n = {k: got.count(k) for k in ("pass", "inconclusive", "fail")}
    return (f"{n['pass']} pass, {n['inconclusive']} inconclusive, "
            f"{n['fail']} fail (false alarms {n['fail'] / len(ids):.0%})")


def summarize(done: dict[str, list[dict[str, object]]], matrix: Matrix, pairs: int) -> None:
    def count(ids: list[int], stats: Stats) -> str:
        return count_on(done, ids, stats)

    ids = list(range(pairs))
    shipped = stats_for(matrix)
    print(f"shipped config (tolerance {shipped.tolerance}, session noise {shipped.session_noise}): "
          f"{pairs} A/A pairs: {count(ids, shipped)}")
    for tol in (0.05, 0.10, 0.20, 0.30):
        print(f"  tolerance {tol:.2f}, no session noise: {count(ids, stats_for(matrix, tol, 0.0))}")
    first, second = ids[: pairs // 2], ids[pairs // 2:]
    if not first:  # one pair: nothing to split or to estimate a between-pair noise from
        return
    s1, s2, s_all = session_noise(done, first), session_noise(done, second), session_noise(done, ids)
    print(f"session noise (log-SD): {s_all:.3f} from all pairs; {s1:.3f} from the first half, {s2:.3f} from "
          f"the second")
    for tol in (0.05, 0.10, 0.20, 0.30):
        print(f"  tolerance {tol:.2f}, split half (noise from the other half): first half "
              f"{count(first, stats_for(matrix, tol, s2))}; second half {count(second, stats_for(matrix, tol, s1))}")
    normalized = probe_normalized(done)
    if normalized is not None:  # does dividing by the host speed probe cancel the machine's drift?
        import math

        for conc in matrix.workload("cpu").concurrency:
            pts = [(math.log(_probe(lv) or 1.0), math.log(float(lv["per_gpu_throughput"])))  # type: ignore[arg-type]
                   for levels in done.values() for lv in levels if lv["concurrency"] == conc]
            r = statistics.correlation([p for p, _ in pts], [y for _, y in pts]) if len(pts) > 2 else float("nan")
            print(f"c={conc}: correlation of log probe time with log throughput {r:+.2f} ({len(pts)} levels)")
        s_norm = session_noise(normalized, ids)
        print(f"probe-normalized: session noise {s_norm:.3f}; "
              f"with it, {count_on(normalized, ids, stats_for(matrix, None, s_norm))}")
        for tol in (0.05, 0.10, 0.20, 0.30):
            print(f"  probe-normalized, tolerance {tol:.2f}, no session noise: "
                  f"{count_on(normalized, ids, stats_for(matrix, tol, 0.0))}")
    # Spread of single levels, to size repeats and margins.
    for conc in matrix.workload("cpu").concurrency:
        ys = [float(lv["per_gpu_throughput"]) for levels in done.values() for lv in levels  # type: ignore[arg-type]
              if lv["concurrency"] == conc]
        xs = [float(lv["interactivity"]) for levels in done.values() for lv in levels  # type: ignore[arg-type]
              if lv["concurrency"] == conc]
        print(f"c={conc}: {len(ys)} levels, throughput mean {statistics.mean(ys):.0f} tok/s/device "
              f"(CV {statistics.stdev(ys) / statistics.mean(ys):.1%}), interactivity mean "
              f"{statistics.mean(xs):.1f} tok/s/user (CV {statistics.stdev(xs) / statistics.mean(xs):.1%})")


def cli_check(client: BenchClient, target: Target, workload: object, out: Path) -> None:
    """The plugin's in-process `vllm bench serve` against the CLI, alternating, 3 runs each per level.
    Output throughput is tokens / duration, the same for both clients; interactivity is not compared
    (client-side TPOT is what bursts on this machine)."""
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
