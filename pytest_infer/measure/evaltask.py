"""lm-eval tasks and command lines: the repo's offline arithmetic task for its tiny model, and GSM8K 5-shot
the way InferenceX runs it for real models. Pure functions over files and argv: nothing is launched here.

The command line is lm-eval's own CLI (`python -m lm_eval run ...`), so tests parse it with lm-eval's
parser, and a user can paste it from the run log.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pytest_infer import arith

ARITH = "arith"  # the tiny model's task: written by the repo, no hub, no download
GSM8K = "gsm8k_infx"  # lm-eval's gsm8k with InferenceX's prompt (their utils/evals/gsm8k.yaml)


class AccuracySpec(BaseModel):
    """How a model's accuracy is measured (models.yaml `accuracy:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str = Field(description=f"{ARITH} (the repo's offline task), {GSM8K}, or any lm-eval task name")
    api: Literal["completions", "chat"] = "chat"  # lm-eval local-completions or local-chat-completions
    num_fewshot: int = Field(0, ge=0)
    samples: int | None = Field(None, ge=1, description="documents to score (lm-eval --limit); arith: set size")
    max_tokens: int = Field(4096, ge=1)
    concurrency: int = Field(32, ge=1, description="requests in flight (lm-eval num_concurrent)")
    parity_prompts: int = Field(64, ge=1, description="greedy prompts compared with the reference")
    parity_max_tokens: int = Field(32, ge=1)


def _write_whole(path: Path, text: str) -> None:
    """Under xdist every worker writes the same task files while another's lm-eval may be reading them:
    a reader sees the old file or the new one (rename), never a half-written one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_arith_task(directory: Path, n: int) -> Path:
    """A local lm-eval task (YAML + JSONL) of n held-out addition problems; returns the YAML path.

    Exact match on the text before the first newline, as `arith.is_correct` scores it."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "arith-test.jsonl"
    _write_whole(data, "".join(json.dumps({"prompt": p.prompt, "answer": p.answer}) + "\n"
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
    path = directory / f"{ARITH}.yaml"  # as task_path names it
    _write_whole(path, yaml.safe_dump(task, sort_keys=False))
    return path


def write_gsm8k_task(directory: Path) -> Path:
    """lm-eval's gsm8k, with the prompt InferenceX uses (it asks for the `#### N` line the strict filter
    reads) and stops on the DeepSeek end-of-turn tokens too. Data: the hub's openai/gsm8k (on GPUs only)."""
    import lm_eval

    directory.mkdir(parents=True, exist_ok=True)
    base = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
    task = {
        "include": str(base),
        "task": GSM8K,
        "doc_to_text": "Question: {{question}}\nEnd your response with the answer on the last line, "
                       "formatted as: #### [number]\nAnswer:",
        "generation_kwargs": {"until": ["</s>", "<|im_end|>", "<｜end▁of▁sentence｜>", "<｜User｜>",
                                        "<｜Assistant｜>", "\u202e"], "do_sample": False, "temperature": 0.0},
        "num_fewshot": 5,
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex", "group_select": -1,
                                                 "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                     "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                    {"function": "take_first"}]}],
    }
    path = directory / f"{GSM8K}.yaml"  # as task_path names it
    _write_whole(path, yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return path


def task_path(spec: AccuracySpec, directory: Path) -> Path | None:
    """Where write_task puts the task file (None: a task of lm-eval's own registry)."""
    return directory / f"{spec.task}.yaml" if spec.task in (ARITH, GSM8K) else None


def write_task(spec: AccuracySpec, directory: Path) -> Path | None:
    """The task file to --include, or None for a task of lm-eval's own registry."""
    if spec.task == ARITH:
        return write_arith_task(directory, spec.samples or 200)
    if spec.task == GSM8K:
        return write_gsm8k_task(directory)
    return None


def task_hash(spec: AccuracySpec, task_file: Path | None) -> str:
    """What decides the scores besides the deployment: the spec, the task file and the data files it
    names. Not the whole directory: another model's task may sit there, and under xdist another worker's
    half-written temp file."""
    h = hashlib.sha256(spec.model_dump_json().encode())
    if task_file is not None:
        task = yaml.safe_load(task_file.read_text()) or {}
        data = ((task.get("dataset_kwargs") or {}).get("data_files") or {}).values()
        for p in sorted([task_file, *map(Path, data)]):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:12]


def lm_eval_argv(spec: AccuracySpec, base_url: str, served_name: str, output: Path, cache: Path,
                 task_file: Path | None) -> list[str]:
    """`lm_eval run` arguments (after `python -m lm_eval`), greedy, per-sample logs kept, resumable:
    `--use_cache` keeps every answered request in SQLite, so a rerun after an interruption asks only
    for the rest. InferenceX's own run: local-chat-completions --apply_chat_template, 5-shot,
    max_tokens 4096, temperature 0, top_p 1, 32 concurrent, tokenized_requests False."""
    endpoint = "chat/completions" if spec.api == "chat" else "completions"
    model = "local-chat-completions" if spec.api == "chat" else "local-completions"
    model_args = (f"model={served_name},base_url={base_url.rstrip('/')}/v1/{endpoint},num_concurrent={spec.concurrency},"
                  f"max_retries=2,tokenized_requests=False,tokenizer_backend=None,timeout=600")
    if spec.api == "chat":
        model_args += ",eos_string=</s>"
    argv = ["run", "--model", model, "--model_args", model_args,
            "--tasks", spec.task, "--output_path", str(output), "--log_samples", "--use_cache", str(cache),
            "--gen_kwargs", f"max_gen_toks={spec.max_tokens},temperature=0,top_p=1", "--seed", "0"]
    if spec.api == "chat":
        argv.append("--apply_chat_template")
    if task_file is not None:
        argv += ["--include_path", str(task_file.parent)]
    if spec.num_fewshot:
        argv += ["--num_fewshot", str(spec.num_fewshot)]
    if spec.samples is not None and spec.task != ARITH:
        argv += ["--limit", str(spec.samples)]
    return argv
