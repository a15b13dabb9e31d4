"""Models the repo makes itself (models.yaml `builder:`, a module path): the module builds the model's
directory locally and may bring the lm-eval tasks it is scored on, so the product names no model's task."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, cast


class ModelBuilder(Protocol):
    TASKS: tuple[str, ...]  # lm-eval tasks the builder writes itself (models.yaml accuracy.task)

    def build(self, out_dir: Path) -> Path: ...  # idempotent: a built directory is kept

    def fingerprint(self, model_dir: Path) -> str: ...  # what identifies the weights (measurement keys)

    def write_task(self, task: str, path: Path, samples: int | None) -> Path: ...  # the task YAML at `path`

    def parity_prompts(self, n: int) -> list[str]: ...  # fixed greedy prompts for output agreement


class BuilderError(ValueError):
    """The module named as a builder cannot be imported or lacks what a builder provides."""


# Builders that moved: matrices written before the move keep naming the old module.
MOVED = {"pytest_infer.tinymodel": "pytest_infer.tiny"}


def load_builder(module: str) -> ModelBuilder:
    module = MOVED.get(module, module)
    try:
        got = importlib.import_module(module)
    except ImportError as exc:
        raise BuilderError(f"cannot import {module!r}: {exc}") from None
    missing = [name for name in ("TASKS", "build", "fingerprint", "write_task", "parity_prompts")
               if not hasattr(got, name)]
    if missing:
        raise BuilderError(f"{module!r} is not a model builder: it has no {', '.join(missing)} "
                           "(see pytest_infer.builder.ModelBuilder)")
    return cast(ModelBuilder, got)
