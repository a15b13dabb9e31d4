"""Shared by the replay tests: the field's files as dicts, and the matrices with a KV-offload optimization."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pytest_infer.matrix import default_root

OFFLOAD = Path(__file__).resolve().parent / "data" / "inferencex" / "b200-dsr1-fp4-vllm-kv-offload"


def json_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def kv_matrices(dst: Path) -> Path:
    """The shipped matrices plus a `kvoffload` optimization (data only, as a user would add it)."""
    shutil.copytree(default_root(), dst, ignore=shutil.ignore_patterns("*.md"))
    (dst / "optimizations.yaml").write_text((dst / "optimizations.yaml").read_text() + (
        "  kvoffload:\n    summary: KV-cache offload to host memory\n"))
    engine = dst / "engines" / "vllm.yaml"
    engine.write_text(engine.read_text().replace("\n# What vLLM can run", (
        "\n  kvoffload:\n    args: [--kv-offloading-size, '64', --kv-offloading-backend, native]\n"
        "\n# What vLLM can run")))
    sglang = dst / "engines" / "sglang.yaml"  # HiCache, SGLang's host-memory KV tier
    sglang.write_text(sglang.read_text().replace(
        "\ngpus:\n", "\n  kvoffload: {args: [--enable-hierarchical-cache]}\n\ngpus:\n"))
    return dst


def two_engines(res: Path) -> Path:
    """The tp8 kv-offload files, and the same files relabelled as SGLang's (framework and file name changed:
    a second engine's data shaped like the first's, not a claim about SGLang)."""
    for engine in ("vllm", "sglang"):
        (res / engine).mkdir(parents=True)
        for f in OFFLOAD.glob("*_tp8_*.json"):
            d = json_of(f)
            d["framework"] = engine
            (res / engine / f.name.replace("_vllm_", f"_{engine}_")).write_text(json.dumps(d))
    return res
