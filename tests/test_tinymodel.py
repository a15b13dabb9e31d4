"""Tests for the tiny GLM-4.5-style model builder (no vLLM engine needed); its training: test_tinytrain.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_infer.tiny import model as tinymodel

pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tinymodel.build_tiny_model(tmp_path_factory.mktemp("a") / "tiny")


def _file_hashes(d: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_build_is_byte_identical(built: Path, tmp_path: Path) -> None:
    other = tinymodel.build_tiny_model(tmp_path / "tiny")
    assert _file_hashes(built) == _file_hashes(other)
    assert tinymodel.model_fingerprint(built) == tinymodel.model_fingerprint(other)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
        _file_hashes(built)
    )
    # The weights are the trained ones shipped with the package, not a random init.
    assert (built / "model.safetensors").read_bytes() == tinymodel.WEIGHTS.read_bytes()


def test_rebuild_is_skipped_and_tampering_detected(tmp_path: Path) -> None:
    out = tinymodel.build_tiny_model(tmp_path / "m")
    weights = out / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    tinymodel.build_tiny_model(out)
    assert weights.stat().st_mtime_ns == mtime  # skipped: marker matched

    (out / "config.json").write_text("{}")
    assert not tinymodel.is_built(out)
    tinymodel.build_tiny_model(out)
    assert tinymodel.is_built(out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "glm4_moe"


def test_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(dest: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tinymodel, "_write_weights", boom)
    with pytest.raises(KeyboardInterrupt):
        tinymodel.build_tiny_model(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_config_and_weight_names(built: Path) -> None:
    from safetensors import safe_open

    cfg = json.loads((built / "config.json").read_text())
    assert cfg["architectures"] == ["Glm4MoeForCausalLM"]
    assert cfg["num_nextn_predict_layers"] == 1
    assert cfg["head_dim"] % 32 == 0  # CPU attention backend + fp8 KV cache
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # GQA
    assert cfg["rope_parameters"]["partial_rotary_factor"] == 0.5

    n = cfg["num_hidden_layers"]
    with safe_open(str(built / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        assert str(f.get_tensor("lm_head.weight").dtype) == "torch.bfloat16"
    # vLLM's glm4_moe_mtp.py loader: MTP extras plus a full (MoE) decoder block at index N.
    for suffix in ("enorm", "hnorm", "eh_proj", "shared_head.norm", "shared_head.head", "embed_tokens"):
        assert f"model.layers.{n}.{suffix}.weight" in names
    assert f"model.layers.{n}.self_attn.q_proj.weight" in names
    assert f"model.layers.{n}.mlp.experts.{cfg['n_routed_experts'] - 1}.down_proj.weight" in names
    assert f"model.layers.{n}.mlp.shared_experts.gate_proj.weight" in names
    assert "model.layers.0.mlp.gate_proj.weight" in names  # first_k_dense_replace=1


def test_tokenizer_is_character_level(built: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(built))
    assert len(tok) == json.loads((built / "config.json").read_text())["vocab_size"]
    text = "12+345=357\nAb c!"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "2+2="}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|user|>\n2+2=\n<|assistant|>\n"


def test_import_is_light() -> None:
    # The plugin imports this module at startup: it must not pull in torch/transformers.
    code = (
        "import sys, pytest_infer.tiny.model; "
        "print(any(m in sys.modules for m in ('torch', 'transformers', 'tokenizers', 'safetensors')))"
    )
    root = Path(tinymodel.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
