"""A YAML file read into a pydantic model, every failure one line naming the file and where in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

_M = TypeVar("_M", bound=BaseModel)


def parse_model(path: Path, text: str, schema: type[_M], error: type[Exception], word: str = "key") -> _M:
    """`text` (the contents of `path`) as `schema`; `error` with "<path>: line N: not valid YAML ..." or
    "<path>: <word> a.b.c: <what is wrong>" (the first validation error: one line, not pydantic's table)."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise error(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise error(f"{path}: {word} {loc}: {err['msg']}") from None
