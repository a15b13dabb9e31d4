"""Optimizations, stacks, parts and ids. Pure data: no engine, no pytest state."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from _pytest.mark.expression import Expression

BASE = "base"


@dataclass(frozen=True, order=True)
class Stack:
    """A set of optimizations on one engine and one GPU kind, ordered as matrices/ lists them."""

    gpu: str
    engine: str
    opts: tuple[str, ...]
    # Replayed results: one configuration of the stack (model, workload, TP/EP), so that several
    # measured configurations are never mixed into one curve. Parts keep it: compared like with like.
    variant: str = ""

    @property
    def label(self) -> str:
        return "+".join(self.opts) or BASE

    @property
    def id(self) -> str:
        return f"{self.gpu}-{self.engine}-{self.label}" + (f"@{self.variant}" if self.variant else "")

    def __str__(self) -> str:
        return self.id

    def parts(self) -> list[Stack]:
        """Every proper subset, base first, then by size: what the stack must beat."""
        return [Stack(self.gpu, self.engine, sub, self.variant) for sub in _subsets(self.opts)
                if len(sub) < len(self.opts)]

    def with_opts(self, opts: Iterable[str]) -> Stack:
        chosen = set(opts)
        return Stack(self.gpu, self.engine, tuple(o for o in self.opts if o in chosen), self.variant)


def _subsets(opts: Sequence[str]) -> list[tuple[str, ...]]:
    return [c for n in range(len(opts) + 1) for c in itertools.combinations(opts, n)]


def all_stacks(gpu: str, engine: str, optimizations: Sequence[str]) -> list[Stack]:
    """Every subset, in a fixed order (size, then matrix order) so xdist workers agree."""
    return [Stack(gpu, engine, sub) for sub in _subsets(optimizations)]


def parse_label(label: str, optimizations: Sequence[str]) -> tuple[str, ...]:
    """'mtp+fp4' -> ('fp4', 'mtp') in matrix order; raises ValueError on an unknown name."""
    if label == BASE:
        return ()
    names = label.split("+")
    unknown = [n for n in names if n not in optimizations]
    if unknown:
        raise ValueError(f"unknown optimization {unknown[0]!r} (known: {', '.join(optimizations)})")
    return tuple(o for o in optimizations if o in names)


def matches(stack: Stack, expr: str, optimizations: Sequence[str]) -> bool:
    """True if `expr` selects the stack.

    `expr` is a stack label (`fp4+mtp`, `base`: exactly that set) or a boolean expression over
    optimization names and `base` (`mtp and not disagg`, `base or wideep`), in pytest's -k/-m language.
    """
    text = expr.strip()
    if "+" in text or text == BASE:
        return stack.opts == parse_label(text, optimizations)
    for word in text.replace("(", " ").replace(")", " ").split():
        if word not in ("and", "or", "not", BASE) and word not in optimizations:
            raise ValueError(f"unknown optimization {word!r} in {expr!r} (known: {', '.join(optimizations)})")
    def has(name: str, /, **kwargs: str | int | bool | None) -> bool:
        return name in stack.opts or (name == BASE and not stack.opts)

    return bool(Expression.compile(text).evaluate(has))
