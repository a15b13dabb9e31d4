"""The vendor's view of a run, written after its suite's report: the run added to the history, then
compatibility.md (this GPU kind) and compatibility-all.md (every GPU kind and engine with results) and
trends.md read back from it. Nothing here can fail a run: a history that cannot be written or read is
said in one line, and the run's own reports stand."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_infer.analysis.checks import Stats
from pytest_infer.history import compatibility
from pytest_infer.history.record import Entry, entries_of
from pytest_infer.history.store import History, HistoryError
from pytest_infer.report.rows import Row

if TYPE_CHECKING:
    from pytest_infer.run import Run
    from pytest_infer.space import Stack


class VendorView:
    def __init__(self, run: Run, stacks: Mapping[str, Stack]) -> None:
        self.run = run
        self.stacks = stacks
        self.root = run.options.history or run.options.report_root / "history"
        self.history = History(self.root)
        self.started = datetime.datetime.now(datetime.UTC)

    def stats_for(self, gpu: str) -> Stats:
        """A neighbour is judged as a baseline is: the GPU kind's regression margin and session noise."""
        return self.run.stats(regression=True, gpu=gpu if gpu in self.run.matrix.gpus else None)

    def write(self, rows: Sequence[Row]) -> list[str]:
        """Lines for the terminal summary: what was added, what was written, the changes called out."""
        run = self.run
        entries = entries_of(run, rows, self.stacks, self.started)
        lines = []
        dated = [e for e in entries if e.when]
        if len(dated) < len(entries):
            lines.append(f"history: not added: the replayed data of {len(entries) - len(dated)} engine(s) carries "
                         f"no dates")
        try:
            added = self.history.add(dated)
            lines.append(f"history: {self.root}: {len(added)} run(s) added"
                         + (f", {len(dated) - len(added)} already there" if len(added) < len(dated) else ""))
        except HistoryError as exc:
            lines.append(f"history: {exc}; nothing added")
        got = self.history.read()
        lines += [f"history: skipped {b}" for b in got.broken]
        folder = run.paths.report_dir
        if run.suite == "composability":
            lines.append(f"compatibility: {self._compatibility(entries, got.entries)}")
        mine = [e for e in got.entries if e.gpu == run.gpu and e.suite == run.suite]
        if mine:
            from pytest_infer.history import trends

            page, changes = trends.write(mine, got.broken, self.root, folder, self.stats_for)
            lines.append(f"trends: {page}: {len(changes)} change(s) beyond the noise")
            lines += [f"  {c.line()[2:]}" for c in changes]
        return lines

    def _compatibility(self, entries: list[Entry], history: list[Entry]) -> Path:
        run, opts = self.run, self.run.optimizations
        here = compatibility.page(entries, opts, f"Compatibility matrix: {run.gpu}")
        path = run.paths.report_dir / "compatibility.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(here)
        keys = {e.key for e in history}
        every = [*history, *(e for e in entries if e.key not in keys)]
        (run.paths.report_dir / "compatibility-all.md").write_text(
            compatibility.page(every, opts, "Compatibility across GPU kinds and engines"))
        return path
