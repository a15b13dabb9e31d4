"""The tiny model's accuracy task for lm-eval: held-out 3-digit additions (`arith`), written locally (no hub)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pytest_infer.files import write_whole
from pytest_infer.tiny import arith

ARITH = "arith"


def write_arith_task(path: Path, n: int) -> Path:
    """A local lm-eval task at `path` (YAML, its JSONL data beside it) of n held-out addition problems.

    Exact match on the text before the first newline, as `arith.is_correct` scores it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.parent / "arith-test.jsonl"
    write_whole(data, "".join(json.dumps({"prompt": p.prompt, "answer": p.answer}) + "\n"
                               for p in arith.problems("test", n)))
    task = {
        "task": ARITH,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": "",
        "generation_kwargs": {"until": [arith.STOP], "do_sample": False, "temperature": 0.0, "max_gen_toks": 8},
        "filter_list": [{"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "problems": n},
    }
    write_whole(path, yaml.safe_dump(task, sort_keys=False))
    return path


def parity_prompts(n: int) -> list[str]:
    """Held-out addition problems of another seed than the task's: the greedy-agreement prompt set."""
    return [p.prompt for p in arith.problems("test", n, seed=1)]
