"""An engine described only in matrices/engines/<name>.yaml: every flag comes from the YAML."""

from __future__ import annotations

from pytest_infer.engines.base import ServerShape


def parallel_flags(shape: ServerShape, node_in_role: int, per_node: int, head_host: str) -> list[str]:
    return []
