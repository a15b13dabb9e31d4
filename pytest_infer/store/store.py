"""Records on disk, one JSON per deployment named by stack id and key: measurements under
<report-dir>/<gpu>/results/ (written after every level), accuracy runs under results/accuracy/. Writes are
atomic, so an interrupted run keeps what it measured and resumes from there."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from filelock import FileLock

from pytest_infer.files import write_whole
from pytest_infer.store.records import Measurement, Record, ResultError

R = TypeVar("R", bound=Record)
SKIPPED = "skipped.txt"  # beside a replayed store: the files of the results tree that were not read, why


class RecordStore(Generic[R]):
    schema: ClassVar[type[Record]]

    def __init__(self, root: Path, read_only: bool = False) -> None:
        self.root = root
        self.read_only = read_only
        self.set_aside: list[str] = []  # broken records moved out of the way, one line each, for the log

    def path(self, stack_id: str, key: str) -> Path:
        return self.root / f"{stack_id}-{key}.json"

    def lock(self, stack_id: str, key: str) -> FileLock:
        """Held while a deployment is measured, so that two workers never launch it twice."""
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path(stack_id, key)) + ".lock")

    def _read(self, path: Path) -> R:
        return self.schema.model_validate_json(path.read_text())  # type: ignore[return-value]

    def load(self, stack_id: str, key: str) -> R | None:
        """The stored record, or None. A broken one (truncated, mistyped) in a store this run writes is moved
        aside to `<name>.broken` and measured again; in a replayed store it is a ResultError naming the file."""
        path = self.path(stack_id, key)
        if not path.exists():
            return None
        try:
            return self._read(path)
        except (OSError, ValueError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if self.read_only:
                raise ResultError(f"{path}: not a readable record: {why}") from None
            aside = path.with_name(path.name + ".broken")
            path.replace(aside)
            self.set_aside.append(f"{path}: not a readable record ({why}); moved to {aside.name}, measured again")
            return None

    def save(self, r: R) -> Path:
        if self.read_only:
            raise RuntimeError(f"results store {self.root} is read-only")
        path = self.path(r.stack, r.key)
        return write_whole(path, r.model_dump_json(indent=1))

    def find(self, stack_id: str) -> R | None:
        """Any stored record of the stack, newest first: replay does not know the original key."""
        found = sorted(self.root.glob(f"{stack_id}-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in found:
            if path.stem.removeprefix(stack_id + "-").isalnum():
                return self._read(path)
        return None


    def all(self) -> list[R]:
        """Every record that reads (a foreign or half-written file is not one)."""
        out: list[R] = []
        for path in sorted(self.root.glob("*.json")):
            try:
                out.append(self._read(path))
            except (OSError, ValueError):
                continue
        return out


class Store(RecordStore[Measurement]):
    schema = Measurement
