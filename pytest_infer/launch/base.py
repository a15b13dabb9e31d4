"""What the measurement layer needs of a launcher (local processes or a Slurm job)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Protocol

from pytest_infer.deployment import Deployment


class Launcher(Protocol):
    """A running deployment. `deployment` is what clients talk to: on Slurm, the allocation's addresses
    once the job runs."""

    deployment: Deployment

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def check_alive(self) -> None: ...

    def log_path(self, role_name: str) -> Path: ...

    def log_tail(self, role_name: str, n: int = 30) -> str: ...

    def __enter__(self) -> Launcher: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...
