"""compatibility.md: optimization x optimization, generated from measurements (issue 17, part 2).

Lower-triangular: the cell of a pair is its stack's verdict against its best part -- composes, partial
(holds at some interactivity levels and loses at others: the crossover named), loses, known broken
(linked), inconclusive, unsupported -- with the ratio to its best part and its stacking efficiency. The
diagonal is each optimization alone against base; larger stacks are listed below the table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tabulate import tabulate

from pytest_infer.history.record import Entry, Point

LINK = re.compile(r"https?://[^\s)\]>,;]+")


def kind_of(p: Point) -> str:
    """The cell's word, from the verdict and its per-level intervals."""
    if p.outcome == "PASS":
        return "composes"
    if p.outcome.startswith("xfail"):
        return "known broken"
    if p.outcome.startswith("XPASS"):
        return "composes (known-broken entry out of date)"
    if p.outcome == "inconclusive":
        return "inconclusive"
    if p.outcome == "skip":
        return "unsupported" if "unsupported" in p.detail else "not run"
    if p.outcome == "FAIL":
        return "partial" if _crossover(p) else "loses"
    return p.outcome


def _crossover(p: Point) -> str:
    """Where a failing stack still holds (interval at or above the margin) and where it loses."""
    if not p.intervals or p.tolerance is None:
        return ""
    thr = 1 - p.tolerance
    levels = sorted((float(k), lo, hi) for k, (_, lo, hi) in p.intervals.items())
    holds = [f"{x:.1f}" for x, lo, _ in levels if lo >= thr]
    loses = [f"{x:.1f}" for x, _, hi in levels if hi < thr]
    if not holds or not loses:
        return ""
    return f"holds at {', '.join(holds)}; loses at {', '.join(loses)} tok/s/user"


def cell(p: Point | None) -> str:
    if p is None:
        return "not run"
    kind = kind_of(p)
    text = f"**{kind}**"
    if p.ratio is not None:
        text += f" {p.ratio:.2f}"
        if p.low is not None and p.high is not None and p.low != p.high:
            text += f" [{p.low:.2f}, {p.high:.2f}]"
        if p.best_part:
            text += f" vs {p.best_part}"
    if p.efficiency is not None:
        text += f", efficiency {p.efficiency:.2f}"
        if p.efficiency_low is not None and p.efficiency_high is not None and p.efficiency_low != p.efficiency_high:
            text += f" [{p.efficiency_low:.2f}, {p.efficiency_high:.2f}]"
    if p.split is not None and p.split_efficiency is not None:
        text += f", {p.split_efficiency:.2f} against {p.split}"
    if kind == "partial":
        text += f" ({_crossover(p)})"
    if kind == "known broken" and (link := LINK.search(p.detail)):
        text += f" ([upstream]({link.group(0)}))"
    return text.replace("|", "\\|")


def matrix(entry: Entry, optimizations: Sequence[str]) -> str:
    """One GPU kind and engine: the lower triangle per variant, then the larger stacks."""
    variants = sorted({p.variant for p in entry.points})
    return "".join((f"### `{v}`\n\n" if v else "") + _triangle([p for p in entry.points if p.variant == v],
                                                             optimizations) for v in variants)


def _triangle(points: Sequence[Point], optimizations: Sequence[str]) -> str:
    by_opts = {frozenset(p.opts): p for p in points}
    opts = [o for o in optimizations if any(o in p.opts for p in points)]
    opts += sorted({o for p in points for o in p.opts} - set(opts))
    table = [[f"**{a}**", *(cell(by_opts.get(frozenset((a, b)))) if j <= i else "" for j, b in enumerate(opts))]
             for i, a in enumerate(opts)]
    text = tabulate(table, headers=["", *opts], tablefmt="github", disable_numparse=True) + "\n"
    larger = sorted((p for p in points if len(p.opts) > 2), key=lambda p: (len(p.opts), p.label))
    if larger:
        text += "\nStacks of three or more optimizations:\n\n" + "".join(
            f"- `{p.label}`: {cell(p)}\n" for p in larger)
    return text


def _title(entry: Entry) -> str:
    version = f" {entry.engine_version}" if entry.engine_version else ""
    when = entry.when or "undated"
    return f"## {entry.gpu}, {entry.engine}{version}\n\nModel `{entry.model}`; {entry.source}, {when}.\n\n"


INTRO = ("Each cell is the stack of its row's and column's optimizations against the best of its parts at "
         "matched interactivity (the diagonal: the optimization alone against base): **composes** (keeps up with "
         "its best part at every matched level), **partial** (holds at some levels, loses at others: the "
         "crossover named), **loses**, **known broken** (the upstream issue linked), **inconclusive**, "
         "**unsupported**. Then the worst ratio to the best part [interval] and the stacking efficiency "
         "(1.0: the two stack as independent factors; README: stacking efficiency).\n\n")


def page(entries: Sequence[Entry], optimizations: Sequence[str], title: str) -> str:
    """A page of matrices, one per GPU kind and engine, newest entry of each."""
    latest: dict[tuple[str, str], Entry] = {}
    for e in sorted(entries, key=lambda e: e.when):
        if e.suite == "composability":
            latest[(e.gpu, e.engine)] = e
    body = "".join(_title(e) + matrix(e, optimizations) + "\n" for _, e in sorted(latest.items()))
    return f"# {title}\n\n{INTRO}" + (body or "No composability results yet.\n")
