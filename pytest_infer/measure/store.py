"""Measurements on disk under <report-dir>/<gpu>/results/, one JSON per deployment, written after
every level (atomically) so an interrupted run keeps what it measured and resumes from there."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from filelock import FileLock

from pytest_infer.measure.results import Measurement


class Store:
    def __init__(self, root: Path, read_only: bool = False) -> None:
        self.root = root
        self.read_only = read_only

    def path(self, stack_id: str, key: str) -> Path:
        return self.root / f"{stack_id}-{key}.json"

    def lock(self, stack_id: str, key: str) -> FileLock:
        """Held while a deployment is measured, so that two workers never launch it twice."""
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path(stack_id, key)) + ".lock")

    def load(self, stack_id: str, key: str) -> Measurement | None:
        path = self.path(stack_id, key)
        if not path.exists():
            return None
        return Measurement.model_validate_json(path.read_text())

    def save(self, m: Measurement) -> Path:
        if self.read_only:
            raise RuntimeError(f"results store {self.root} is read-only")
        path = self.path(m.stack, m.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(m.model_dump_json(indent=1))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path

    def find(self, stack_id: str) -> Measurement | None:
        """Any stored measurement of the stack, newest first: replay does not know the original key."""
        found = sorted(self.root.glob(f"{stack_id}-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in found:
            if path.stem.removeprefix(stack_id + "-").isalnum():
                return Measurement.model_validate_json(path.read_text())
        return None
