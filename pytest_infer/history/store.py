"""The history directory: one JSON file per entry, named by its key, never rewritten.

    <history>/<gpu>/<engine>/<key>.json

Writers never share a file: an entry is written to a temporary file and linked to its name, which fails
when the name exists, so two pytest runs (or xdist controllers) adding at once are safe without a lock
and adding the same results twice adds nothing. A file that does not read is reported, never fatal.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from pytest_infer.history.record import Entry


class HistoryError(OSError):
    """The directory cannot be written (read-only, not a directory)."""


@dataclass
class Read:
    entries: list[Entry] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # "<file>: why", one line each


class History:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, entry: Entry) -> Path:
        return self.root / entry.gpu / entry.engine / f"{entry.key}.json"

    def add(self, entries: Iterable[Entry]) -> list[Path]:
        """The files of the entries that were new; raises HistoryError naming the directory."""
        added = []
        for entry in entries:
            final = self.path(entry)
            if final.exists():
                continue
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".adding-", suffix=".json")
                with os.fdopen(fd, "w") as fh:
                    fh.write(entry.model_dump_json(indent=1) + "\n")
                try:
                    os.link(tmp, final)  # atomic, and refuses to replace: the first writer wins
                    added.append(final)
                except FileExistsError:
                    pass
                finally:
                    os.unlink(tmp)
            except OSError as exc:
                raise HistoryError(f"history {self.root}: cannot add {final.name}: {exc.strerror or exc}") from None
        return added

    def read(self, gpu: str | None = None) -> Read:
        """Every entry (of one GPU kind), oldest first; files that do not read are listed, not raised."""
        got = Read()
        base = self.root / gpu if gpu is not None else self.root
        if not base.is_dir():
            return got
        for path in sorted(base.rglob("*.json")):
            if path.name.startswith(".adding-"):
                continue
            try:
                got.entries.append(Entry.model_validate_json(path.read_bytes()))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err["loc"]) or "(file)"
                got.broken.append(f"{path}: field {where}: {err['msg']}")
            except OSError as exc:
                got.broken.append(f"{path}: {exc.strerror or exc}")
        got.entries.sort(key=lambda e: (e.when, e.key))
        return got
