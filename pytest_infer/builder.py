"""What the repo makes itself, named by module path in models.yaml: a model (`builder:`, the module builds
the model's directory locally) and the lm-eval tasks written locally (the builder's own, or
`accuracy.writer:`), so the product names no model's task."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, cast


class TaskWriter(Protocol):
    TASKS: tuple[str, ...]  # lm-eval tasks the module writes itself (models.yaml accuracy.task)

    def write_task(self, task: str, path: Path, samples: int | None) -> Path: ...  # the task YAML at `path`

    def parity_prompts(self, n: int) -> list[str]: ...  # fixed greedy prompts for output agreement


class ModelBuilder(TaskWriter, Protocol):
    def build(self, out_dir: Path) -> Path: ...  # idempotent: a built directory is kept

    def fingerprint(self, model_dir: Path) -> str: ...  # what identifies the weights (measurement keys)


class BuilderError(ValueError):
    """The module named cannot be imported or lacks what it is named for."""


# Modules that moved: matrices written before the move keep naming the old one.
MOVED = {"pytest_infer.tinymodel": "pytest_infer.tiny"}
_WRITES = ("TASKS", "write_task", "parity_prompts")


def _load(module: str, names: tuple[str, ...], what: str) -> object:
    module = MOVED.get(module, module)
    try:
        got = importlib.import_module(module)
    except ImportError as exc:
        raise BuilderError(f"cannot import {module!r}: {exc}") from None
    missing = [name for name in names if not hasattr(got, name)]
    if missing:
        raise BuilderError(f"{module!r} is not {what}: it has no {', '.join(missing)} (see pytest_infer.builder)")
    return got


def load_builder(module: str) -> ModelBuilder:
    return cast(ModelBuilder, _load(module, ("build", "fingerprint", *_WRITES), "a model builder"))


def load_task_writer(module: str) -> TaskWriter:
    return cast(TaskWriter, _load(module, _WRITES, "a task writer"))
