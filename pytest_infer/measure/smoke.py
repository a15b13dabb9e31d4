"""Smoke: launch a stack and get one greedy completion through its endpoint (catches launch and
runtime failures in about one start-up time, without a sweep)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from pytest_infer.deployment import Deployment
from pytest_infer.measure.evidence import Evidence

PROMPT = "12+34="


@dataclass(frozen=True)
class SmokeResult:
    launch_s: float
    first_s: float  # latency of the one request
    text: str
    evidence: Evidence | None = None  # what the deployment showed of its stack's claims (measure/evidence.py)


def one_completion(dep: Deployment, max_tokens: int = 8, timeout_s: float = 300) -> tuple[float, str]:
    """(seconds, text) of a greedy completion; raises RuntimeError with the status and body otherwise."""
    t0 = time.monotonic()
    resp = httpx.post(f"{dep.endpoint_url}/v1/completions", timeout=timeout_s, json={
        "model": dep.served_name, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0})
    took = time.monotonic() - t0
    if resp.status_code != 200:
        raise RuntimeError(f"POST /v1/completions answered {resp.status_code}: {resp.text[:300]}")
    choices = resp.json().get("choices") or [{}]
    text = str(choices[0].get("text", ""))
    usage = resp.json().get("usage") or {}
    if not usage.get("completion_tokens"):
        raise RuntimeError(f"POST /v1/completions returned no tokens: {resp.text[:300]}")
    return took, text
