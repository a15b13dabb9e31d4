"""The cpu kind's model, made by the repo (no download): a tiny GLM-4.5-style MoE with one MTP layer,
trained on 3-digit addition, and its own accuracy task. models.yaml names this package as the model's
`builder:`; pytest_infer.builder says what a builder provides. Heavy imports stay inside the functions."""

from __future__ import annotations

from pathlib import Path

from pytest_infer.tiny.model import build_tiny_model, model_fingerprint
from pytest_infer.tiny.task import parity_prompts as prompts
from pytest_infer.tiny.task import write_arith_task

TASKS = ("arith",)  # the lm-eval tasks this builder writes itself


def build(out_dir: Path) -> Path:
    return build_tiny_model(out_dir)


def fingerprint(model_dir: Path) -> str:
    return model_fingerprint(model_dir)


def write_task(task: str, path: Path, samples: int | None) -> Path:
    if task not in TASKS:
        raise ValueError(f"the tiny model's builder writes {', '.join(TASKS)}, not {task!r}")
    return write_arith_task(path, samples or 200)


def parity_prompts(n: int) -> list[str]:
    return prompts(n)
