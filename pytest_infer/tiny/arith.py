"""The tiny model's task: multi-digit addition, as plain text the character-level tokenizer reads digit by digit.

One definition serves the training script (pytest_infer.tiny.train), the local lm-eval task the conformance
suite runs (no hub, no download) and the output-parity prompts. A prompt is ``"{a}+{b}="``; the answer is
the decimal sum, then a newline. Train and test are split by a hash of the pair, so no test problem is
ever trained on, whatever the sample sizes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

MAX_OPERAND = 999  # three-digit operands: carries across up to three positions
STOP = "\n"  # generation stops here (lm-eval `until`, vLLM `stop`)


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def prompt(self) -> str:
        return f"{self.a}+{self.b}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def split(self) -> str:
        """'test' for about 1 pair in 16 (by hash), else 'train'."""
        digest = hashlib.sha256(f"{self.a},{self.b}".encode()).digest()
        return "test" if digest[0] % 16 == 0 else "train"


def problems(split: str, n: int, seed: int = 0) -> list[Problem]:
    """n distinct problems of one split, deterministic for a seed."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    rng = random.Random(f"{split}:{seed}")
    seen: set[tuple[int, int]] = set()
    out: list[Problem] = []
    while len(out) < n:
        p = Problem(rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND))
        if p.split == split and (p.a, p.b) not in seen:
            seen.add((p.a, p.b))
            out.append(p)
    return out


def is_correct(problem: Problem, completion: str) -> bool:
    """Exact match on the text before the first stop."""
    return completion.split(STOP, 1)[0].strip() == problem.answer
