"""What an engine adapter makes of a stack: roles with argv, env, devices and ports. Pure data."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

RoleKind = Literal["server", "prefill", "decode", "router"]


class Role(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # unique in the deployment: server, prefill, decode, router, prefill-node1, ...
    kind: RoleKind
    argv: list[str]
    env: dict[str, str]  # only what the role adds to the inherited environment
    gpus: int  # devices this process drives (0 for the router)
    nodes: int = 1
    node: int = 0  # index of the node the process runs on, within the deployment
    host: str
    port: int | None  # None: a headless follower with no HTTP endpoint
    health_path: str = "/health"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Deployment(BaseModel):
    model_config = ConfigDict(frozen=True)

    stack: str  # stack id
    engine: str
    gpu: str
    model: str  # checkpoint (HF id or local path)
    served_name: str
    roles: list[Role]
    endpoint: str  # name of the role clients talk to (server or router)
    nodes: int

    @property
    def gpus(self) -> int:
        """Devices the deployment occupies: prefill + decode for disagg, as the field counts them."""
        return sum(r.gpus for r in self.roles)

    @property
    def decode_gpus(self) -> int:
        return sum(r.gpus for r in self.roles if r.kind in ("decode", "server"))

    def role(self, name: str) -> Role:
        return next(r for r in self.roles if r.name == name)

    @property
    def endpoint_url(self) -> str:
        return self.role(self.endpoint).url

    def fingerprint(self) -> str:
        """Stable hash of what runs (argv, env, devices); build it with fixed plan ports to reuse across runs."""
        blob = json.dumps([r.model_dump(exclude={"host", "port"}) for r in self.roles], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
