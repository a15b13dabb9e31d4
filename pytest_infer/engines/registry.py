"""Engines are plug-ins. An adapter is a module with `parallel_flags` (and optionally `check_command_line`);
its YAML, `<name>.yaml`, sits beside it unless the matrices directory has `engines/<name>.yaml`.

vLLM and SGLang are registered here; anyone else (TensorRT-LLM, ATOM, a vendor's fork) registers an
entry point in the group below from their own distribution, without touching this package:

    [project.entry-points."pytest_infer.engines"]
    trtllm = "my_package.trtllm_adapter"

An entry point with a built-in's name replaces the built-in (a fork's own spelling of its flags).
Nothing is imported to find the YAMLs: the module is located, not run, until a deployment is built.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

GROUP = "pytest_infer.engines"
BUILTIN = {"vllm": "pytest_infer.engines.vllm", "sglang": "pytest_infer.engines.sglang"}
GENERIC = "pytest_infer.engines.generic"  # an engine with a YAML and no adapter: every flag from the YAML


class EngineError(Exception):
    """A registered adapter that cannot be found or imported (one line naming the entry point)."""


@cache
def registered() -> dict[str, str]:
    """Engine name -> adapter module, built-ins first, then entry points (which win on a clash)."""
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.value.split(":")[0]
    return found


def _where(engine: str) -> str:
    module = registered()[engine]
    return f"entry point {GROUP}:{engine} = {module}" if module != BUILTIN.get(engine) else module


def engine_file(engine: str) -> Path | None:
    """The YAML shipped beside a registered adapter (`<dir of the module>/<engine>.yaml`), if any."""
    module = registered()[engine]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise EngineError(f"{_where(engine)}: cannot find the module: {exc}") from None
    if spec is None or spec.origin is None:
        raise EngineError(f"{_where(engine)}: no such module")
    path = Path(spec.origin).parent / f"{engine}.yaml"
    return path if path.is_file() else None


def shipped_files() -> dict[str, Path]:
    """Every registered engine's own YAML (engines whose YAML lives in the matrices directory have none)."""
    out = {}
    for engine in registered():
        path = engine_file(engine)
        if path is not None:
            out[engine] = path
    return out


def adapter(engine: str) -> ModuleType:
    """The engine's adapter module; an engine described only in YAML gets the generic one."""
    module = registered().get(engine, GENERIC)
    try:
        loaded = importlib.import_module(module)
    except Exception as exc:  # a third party's module: whatever it raises, say which plug-in it was
        raise EngineError(f"{_where(engine)}: import failed: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(loaded, "parallel_flags", None)):
        raise EngineError(f"{_where(engine)}: the adapter has no parallel_flags(shape, node_in_role, "
                          f"per_node, head_host) function")
    return loaded
