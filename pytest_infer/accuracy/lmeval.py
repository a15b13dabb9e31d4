"""lm-eval tasks and command lines: a model's task (one its builder writes, GSM8K 5-shot the way InferenceX
runs it, or one of lm-eval's own) and the argv that runs it. Pure functions over files and argv: nothing
is launched here.

The command line is lm-eval's own CLI (`python -m lm_eval run ...`), so tests parse it with lm-eval's
parser, and a user can paste it from the run log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from pytest_infer.files import write_whole
from pytest_infer.matrix import AccuracySpec

if TYPE_CHECKING:
    from pytest_infer.builder import TaskWriter

GSM8K = "gsm8k_infx"  # lm-eval's gsm8k with InferenceX's prompt (their utils/evals/gsm8k.yaml)


def write_gsm8k_task(path: Path) -> Path:
    """lm-eval's gsm8k, with the prompt InferenceX uses (it asks for the `#### N` line the strict filter
    reads) and stops on the DeepSeek end-of-turn tokens too. Data: the hub's openai/gsm8k (on GPUs only)."""
    import lm_eval

    path.parent.mkdir(parents=True, exist_ok=True)
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
    write_whole(path, yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return path


# Greedy parity prompts for real models: fixed, varied, short; long enough answers to diverge.
TEXT_PROMPTS = (
    "The capital of France is", "Water boils at a temperature of", "def fibonacci(n):\n",
    "The three primary colors are", "In 1969, the first humans to walk on the Moon were",
    "Translate to German: 'Good morning, how are you?'\n", "A prime number is",
    "The derivative of x^2 with respect to x is", "List three uses of a paperclip:\n1.",
    "Photosynthesis converts", "SELECT name FROM users WHERE", "The speed of light in vacuum is about",
    "Once upon a time, in a small village,", "The largest planet in the solar system is",
    "To sort a list in Python, you can", "Question: What is 17 times 23?\nAnswer:",
)


@dataclass(frozen=True)
class Task:
    """A model's accuracy task: its spec, and the builder that writes it when the model brings its own."""

    spec: AccuracySpec
    builder: TaskWriter | None = None

    @property
    def own(self) -> bool:
        """Written by the model's builder (sized by `samples`, no --limit)."""
        return self.builder is not None and self.spec.task in self.builder.TASKS

    def path(self, directory: Path) -> Path | None:
        """Where write() puts the task file (None: a task of lm-eval's own registry)."""
        return directory / f"{self.spec.task}.yaml" if self.own or self.spec.task == GSM8K else None

    def write(self, directory: Path) -> Path | None:
        """The task file to --include, or None for a task of lm-eval's own registry."""
        path = self.path(directory)
        if path is None:
            return None
        if self.builder is not None and self.own:
            return self.builder.write_task(self.spec.task, path, self.spec.samples)
        return write_gsm8k_task(path)

    def parity_prompts(self) -> list[str]:
        """The fixed greedy prompt set: the builder's (its own task's kind of prompt), else a text list."""
        if self.builder is not None and self.own:
            return self.builder.parity_prompts(self.spec.parity_prompts)
        return list(TEXT_PROMPTS[: self.spec.parity_prompts])

    def argv(self, base_url: str, served_name: str, output: Path, cache: Path, task_file: Path | None) -> list[str]:
        return lm_eval_argv(self.spec, base_url, served_name, output, cache, task_file,
                            limit=None if self.own else self.spec.samples)


def task_hash(spec: AccuracySpec, task_file: Path | None) -> str:
    """What decides the scores besides the deployment: the spec, the task file and the data files it
    names. Not the whole directory: another model's task may sit there, and under xdist another worker's
    half-written temp file."""
    # writer: only where set, so the keys of results stored before it existed stay the same
    h = hashlib.sha256(spec.model_dump_json(exclude=None if spec.writer else {"writer"}).encode())
    if task_file is not None:
        task = yaml.safe_load(task_file.read_text()) or {}
        data = ((task.get("dataset_kwargs") or {}).get("data_files") or {}).values()
        for p in sorted([task_file, *map(Path, data)]):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:12]


def lm_eval_argv(spec: AccuracySpec, base_url: str, served_name: str, output: Path, cache: Path,
                 task_file: Path | None, limit: int | None = None) -> list[str]:
    """`lm_eval run` arguments (after `python -m lm_eval`), greedy, per-sample logs kept, resumable:
    `--use_cache` keeps every answered request in SQLite, so a rerun after an interruption asks only
    for the rest. InferenceX's own run: local-chat-completions --apply_chat_template, 5-shot,
    max_tokens 4096, temperature 0, top_p 1, 32 concurrent, tokenized_requests False."""
    endpoint = "chat/completions" if spec.api == "chat" else "completions"
    model = "local-chat-completions" if spec.api == "chat" else "local-completions"
    model_args = (f"model={served_name},base_url={base_url.rstrip('/')}/v1/{endpoint},"
                  f"num_concurrent={spec.concurrency},"
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
    if limit is not None:
        argv += ["--limit", str(limit)]
    return argv
