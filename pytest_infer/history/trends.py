"""Trends: each stack of each GPU kind and engine, run after run (issue 17, part 4).

Per run: the ratio to the best part, the stacking efficiency and the per-GPU throughput at the series'
interactivity levels (the first run's levels, so every run is read at the same places). A change is
called out when it is beyond the noise:

- between neighbours, with the measurement layer's own intervals: the throughput through the regression
  check of the newer run against the older (the margin and between-session noise a baseline is judged
  with), the ratio and the efficiency when their intervals do not overlap;
- over longer series, by a change-point method (analysis/changepoint.py) on each of those numbers.

Each call-out names what changed between the two runs: engine version, image, plugin, model, workload,
and the settings the run recorded (engine arguments, launcher, repeats).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from pytest_infer.analysis.checks import Stats, regression
from pytest_infer.analysis.curve import Sweeps
from pytest_infer.history.record import Entry, Point

Series = list[tuple[Entry, Point]]


@dataclass(frozen=True)
class Change:
    key: str  # gpu-engine-label
    what: str  # the number and how it moved, with its interval
    since: Entry
    until: Entry
    how: str  # "neighbours" or "change point"

    def line(self) -> str:
        return (f"- {self.key}: {self.what} between {self.since.when} and {self.until.when}; "
                f"{changed(self.since, self.until)} ({self.how})")


def series_of(entries: Sequence[Entry]) -> dict[tuple[str, str, str], Series]:
    """(gpu, engine, stack id) -> its dated points, oldest first."""
    out: dict[tuple[str, str, str], Series] = {}
    for e in sorted((e for e in entries if e.when), key=lambda e: (e.when, e.key)):
        for p in e.points:
            out.setdefault((e.gpu, e.engine, p.stack), []).append((e, p))
    return out


def changed(a: Entry, b: Entry) -> str:
    """What differs between two runs, in words: "sglang 0.5.23 -> 0.5.24, engine args '' -> '--x 1'"."""
    diffs = []
    if a.engine_version != b.engine_version:
        diffs.append(f"{b.engine} {a.engine_version or '?'} -> {b.engine_version or '?'}")
    for name, x, y in (("image", a.image, b.image), ("model", a.model, b.model),
                       ("pytest-infer", a.plugin_version, b.plugin_version),
                       ("pytest-infer commit", a.plugin_commit, b.plugin_commit)):
        if x != y:
            diffs.append(f"{name} {x or '?'} -> {y or '?'}")
    for key in sorted(set(a.settings) | set(b.settings)):
        x, y = a.settings.get(key, ""), b.settings.get(key, "")
        if x != y:
            diffs.append(f"{key} {x!r} -> {y!r}")
    for key in sorted(set(a.workload) | set(b.workload)):
        if a.workload.get(key) != b.workload.get(key):
            diffs.append(f"workload {key} {a.workload.get(key)} -> {b.workload.get(key)}")
    return ", ".join(diffs) if diffs else "nothing recorded changed"


def sweeps(p: Point) -> Sweeps | None:
    return Sweeps.from_records(p.label, (lv.model_dump() for lv in p.levels)) if p.levels else None


def levels_of(s: Series) -> list[float]:
    """The interactivity levels the series is read at: its first measured run's frontier points."""
    for _, p in s:
        if (sw := sweeps(p)) is not None:
            return [pt.interactivity for pt in sw.mean.frontier]
    return []


def throughput_at(p: Point, x: float) -> float | None:
    """On the run's mean curve; below a saturated sweep, its best point (as the checks read it)."""
    sw = sweeps(p)
    if sw is None:
        return None
    if sw.saturated and x < sw.mean.span[0]:
        return sw.mean.frontier[0].throughput
    return sw.mean.at(x)


def _disjoint(a: tuple[float | None, float | None], b: tuple[float | None, float | None]) -> bool:
    (alo, ahi), (blo, bhi) = a, b
    if None in (alo, ahi, blo, bhi) or alo == ahi or blo == bhi:  # a point estimate has no interval to compare
        return False
    assert alo is not None and ahi is not None and blo is not None and bhi is not None
    return ahi < blo or bhi < alo


def neighbour_changes(key: str, s: Series, stats: Stats) -> list[Change]:
    out = []
    for (ea, pa), (eb, pb) in itertools.pairwise(s):
        old, new = sweeps(pa), sweeps(pb)
        if old is not None and new is not None and len(old.repeats) >= 2 and len(new.repeats) >= 2:
            slower, faster = regression(new, old, stats), regression(old, new, stats)
            moved = slower if slower.verdict == "fail" else faster if faster.verdict == "fail" else None
            if moved is not None and (w := moved.worst) is not None:
                a, b = (w.part_throughput, w.stack_throughput) if moved is slower else (w.stack_throughput,
                                                                                       w.part_throughput)
                iv = w.interval if moved is slower else None
                ratio = f"ratio {iv}" if iv is not None else f"ratio {b / a:.3f}, the older run slower beyond it"
                out.append(Change(key, f"per-GPU throughput {a:.1f} -> {b:.1f} tok/s/GPU at {w.interactivity:.1f} "
                                       f"tok/s/user ({ratio}; margin {stats.tolerance:.0%})", ea, eb, "neighbours"))
        for name, fa, fb in (("ratio to best part", (pa.ratio, pa.low, pa.high, pa.interactivity),
                              (pb.ratio, pb.low, pb.high, pb.interactivity)),
                             ("stacking efficiency", (pa.efficiency, pa.efficiency_low, pa.efficiency_high,
                                                      pa.efficiency_interactivity),
                              (pb.efficiency, pb.efficiency_low, pb.efficiency_high, pb.efficiency_interactivity))):
            if fa[0] is not None and fb[0] is not None and _disjoint(fa[1:3], fb[1:3]):
                at = f" at {fb[3]:.1f} tok/s/user" if fb[3] is not None else ""
                out.append(Change(key, f"{name} {fa[0]:.2f} [{fa[1]:.2f}, {fa[2]:.2f}] -> {fb[0]:.2f} "
                                       f"[{fb[1]:.2f}, {fb[2]:.2f}]{at}", ea, eb, "neighbours"))
    return out


def changepoint_changes(key: str, s: Series, significance: float) -> list[Change]:
    """Change points over the whole series (too short a series gives none: the neighbours decide)."""
    from pytest_infer.analysis.changepoint import MIN_POINTS, change_points

    xs = levels_of(s)
    tracks: list[tuple[str, list[float | None]]] = [
        ("ratio to best part", [p.ratio for _, p in s]), ("stacking efficiency", [p.efficiency for _, p in s])]
    if xs:
        tracks.append((f"per-GPU throughput at {xs[0]:.1f} tok/s/user", [throughput_at(p, xs[0]) for _, p in s]))
    out = []
    for name, values in tracks:
        at = [i for i, v in enumerate(values) if v is not None and v > 0]
        if len(at) < MIN_POINTS:  # too short to judge (and ruptures' import is not free): neighbours decide
            continue
        for cp in change_points([float(values[i] or 0) for i in at], significance=significance):
            i = at[cp.index]
            out.append(Change(key, f"{name} {cp.mean_before:.2f} -> {cp.mean_after:.2f} (means of the runs either "
                                   f"side)", s[at[cp.index - 1]][0], s[i][0], "change point"))
    return out


def _plot(key: str, s: Series, path: Path) -> Path:
    """Throughput at the series' levels run after run; below it the ratio and efficiency, when it has any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, runs = levels_of(s), list(range(len(s)))
    ratios = [(name, ys) for name, ys in (("ratio to best part", [p.ratio for _, p in s]),
                                          ("stacking efficiency", [p.efficiency for _, p in s]))
              if any(y is not None for y in ys)]
    fig, axes = plt.subplots(2 if ratios else 1, 1, figsize=(7, 5 if ratios else 3.2), sharex=True, squeeze=False)
    top = axes[0][0]
    for x in xs:
        top.plot(runs, [throughput_at(p, x) or float("nan") for _, p in s], marker="o", label=f"at {x:.1f} tok/s/user")
    top.set_ylabel("tok/s/GPU")
    top.set_title(key)
    if xs:
        top.legend(fontsize=7)
    bottom = axes[-1][0]
    if ratios:
        for name, ys in ratios:
            bottom.plot(runs, [y if y is not None else float("nan") for y in ys], marker="o", label=name)
        bottom.axhline(1.0, color="grey", linewidth=0.8)
        bottom.set_ylabel("ratio")
        bottom.legend(fontsize=7)
    bottom.set_xticks(runs, [e.when[:16].replace("T", "\n") for e, _ in s], fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _fmt(v: float | None, lo: float | None = None, hi: float | None = None) -> str:
    if v is None:
        return ""
    return f"{v:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None and lo != hi else "")


def write(entries: Sequence[Entry], broken: Sequence[str], source: Path, folder: Path,
          stats_for: Callable[[str], Stats], significance: float = 0.01) -> tuple[Path, list[Change]]:
    """<folder>/trends.md and a PNG per stack; returns the page and the changes it calls out."""
    all_series = series_of(entries)
    changes: list[Change] = []
    sections = []
    unmeasured = []
    for (gpu, engine, key), s in sorted(all_series.items()):
        if not any(p.levels or p.ratio is not None for _, p in s):
            unmeasured.append(f"`{key}` ({s[-1][1].outcome})")
            continue
        found = neighbour_changes(key, s, stats_for(gpu)) + changepoint_changes(key, s, significance)
        changes += found
        xs = levels_of(s)
        table = [[e.when, e.engine_version, changed(s[i - 1][0], e) if i else "", p.outcome,
                  _fmt(p.ratio, p.low, p.high), _fmt(p.efficiency, p.efficiency_low, p.efficiency_high),
                  *(f"{t:.0f}" if (t := throughput_at(p, x)) is not None else "" for x in xs)]
                 for i, (e, p) in enumerate(s)]
        png = _plot(key, s, folder / f"trends-{key.removeprefix(gpu + '-')}.png")
        sections.append(f"### `{key}`\n\n" + tabulate(
            table, tablefmt="github", disable_numparse=True,
            headers=["when", engine, "changed since the run before", "verdict", "ratio to best part [interval]",
                     "stacking efficiency [interval]", *(f"tok/s/GPU at {x:.1f} tok/s/user" for x in xs)])
                        + f"\n\n![{png.stem}]({png.name})\n")
    runs = len({e.key for e in entries if e.when})
    head = f"# Trends\n\nHistory `{source}`: {runs} run(s)"
    head += f"; {len(broken)} entry file(s) that do not read (skipped):\n\n" + "".join(
        f"- {b}\n" for b in broken) + "\n" if broken else ".\n\n"
    called = ("## Changes beyond the noise\n\n" + "".join(c.line() + "\n" for c in changes) if changes else
              "## Changes beyond the noise\n\nNone: every change between neighbouring runs is within the noise.\n")
    page = folder / "trends.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    rest = f"\nNever measured (no trend): {', '.join(unmeasured)}.\n" if unmeasured else ""
    page.write_text(head + called + "\n## Per stack\n\n" + "\n".join(sections) + rest)
    return page, changes
