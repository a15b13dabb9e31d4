"""Published accuracy rows (InferenceX's gsm8k-evals.json: one row per run with `score`, `score_se`,
`n_eff`, `hw`, `framework`, `precision`, `spec_decoding`, ...) read into stacks for `--results` replay.

Rows carry no per-sample outcomes, so their parity checks fall back to the unpaired interval. A stack
here is (GPU kind, framework, optimizations) with the model family (and DP attention) as its variant:
fp4 rows against fp8 rows of the same family is FP4-versus-FP8 parity.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pytest_infer.accuracy.runner import AccuracyResult
from pytest_infer.replay.replay import gpu_kind
from pytest_infer.space import Stack

_QUANT = re.compile(r"-(?:fp4|fp8|nvfp4|mxfp4|bf16|v\d+|preview)(?=-|$)")


class EvalRowError(ValueError):
    """An accuracy row that cannot be replayed: one line naming the file, the row and the field."""


class EvalRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    hw: str
    framework: str
    precision: str
    task: str
    score: float
    score_se: float
    n_eff: int
    spec_decoding: str | None = None
    dp_attention: bool | str | None = None
    tp: int | None = None
    ep: int | None = None
    conc: int | None = None
    source: str = ""


def is_eval_row(data: Any) -> bool:
    return isinstance(data, dict) and "task" in data and "score" in data and "hw" in data


def read_rows(root: Path) -> list[tuple[str, EvalRow]]:
    """Every accuracy row in the JSON files under root: (file#index, row)."""
    out: list[tuple[str, EvalRow]] = []
    for path in sorted(p for p in root.rglob("*.json") if p.is_file()):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        items = data if isinstance(data, list) else [data]
        for i, d in enumerate(items):
            if not is_eval_row(d):
                continue
            try:
                out.append((f"{path}#{i}", EvalRow.model_validate(d)))
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(map(str, err["loc"])) or "(row)"
                raise EvalRowError(f"{path}: row {i}: field {field!r}: {err['msg']}") from None
            if not 0 <= d["score"] <= 1 or d["score_se"] < 0 or d["n_eff"] < 1:
                raise EvalRowError(f"{path}: row {i}: score {d['score']}, score_se {d['score_se']}, n_eff "
                                   f"{d['n_eff']} is no accuracy (score in [0, 1], se >= 0, n_eff >= 1)")
    return out


def family(model: str) -> str:
    """'nvidia/DeepSeek-R1-0528-FP4-V2' and 'deepseek-ai/DeepSeek-R1-0528' -> 'deepseek-r1-0528'."""
    name = model.rsplit("/", 1)[-1].lower()
    while (stripped := _QUANT.sub("", name)) != name:
        name = stripped
    return re.sub(r"[^a-z0-9._-]+", "-", name).strip("-")


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() == "true"


def stack_of(row: EvalRow, kinds: Sequence[str], optimizations: Sequence[str], source: str) -> Stack | None:
    """The row's stack, or None for a GPU kind the matrices do not know."""
    kind = gpu_kind(row.hw, list(kinds))
    if kind is None:
        return None
    opts = set()
    precision = row.precision.lower()
    if precision == "fp4":
        opts.add("fp4")
    spec = (row.spec_decoding or "none").lower()
    if spec == "mtp":
        opts.add("mtp")
    elif spec not in ("", "none", "off", "false"):
        raise EvalRowError(f"{source}: spec_decoding {row.spec_decoding!r} maps to no optimization (known: mtp)")
    missing = sorted(opts - set(optimizations))
    if missing:
        raise EvalRowError(f"{source}: needs optimization {missing[0]!r} in the matrices (--infer-matrices)")
    # Only fp8 is the reference precision; other precisions (bf16) are their own variant, never a reference.
    variant = family(row.model) + ("" if precision in ("fp4", "fp8") else f"-{precision}")
    variant += "-dpa" if _truthy(row.dp_attention) else ""  # DP attention is not in the space: kept apart
    return Stack(kind, row.framework.lower(), tuple(o for o in optimizations if o in opts), variant)


def pooled(stack: Stack, rows: list[tuple[str, EvalRow]]) -> AccuracyResult:
    """Several runs of one stack (other TP/EP/concurrency) as one: the mean score. They scored the same
    questions, so averaging does not shrink the question-sampling error: the stderr is their RMS."""
    scores = [r.score for _, r in rows]
    se = math.sqrt(sum(r.score_se ** 2 for _, r in rows) / len(rows))
    first = rows[0][1]
    runs = ", ".join(f"tp{r.tp}/ep{r.ep}/c{r.conc}: {r.score:.4f}" for _, r in rows)
    note = (f"mean of {len(rows)} runs ({runs})" if len(rows) > 1
            else f"one run (tp{first.tp}/ep{first.ep}/c{first.conc})")
    return AccuracyResult(
        key="", stack=stack.id, engine=stack.engine, engine_version="unknown", gpu=stack.gpu, model=first.model,
        task=first.task, status="ok", score=sum(scores) / len(scores), stderr=se, n=min(r.n_eff for _, r in rows),
        source="; ".join(s for s, _ in rows), note=note)


def group(rows: list[tuple[str, EvalRow]], kinds: Sequence[str], optimizations: Sequence[str], gpu: str,
          engines: Sequence[str] | None) -> dict[Stack, AccuracyResult]:
    """Rows of one GPU kind (and engines, when given), pooled per stack."""
    by: dict[Stack, list[tuple[str, EvalRow]]] = {}
    for src, row in rows:
        stack = stack_of(row, kinds, optimizations, src)
        if stack is None or stack.gpu != gpu or (engines and stack.engine not in engines):
            continue
        by.setdefault(stack, []).append((src, row))
    return {s: pooled(s, rs) for s, rs in by.items()}
