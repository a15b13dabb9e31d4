"""The tiny model's training: shipped weights, determinism, and the forward it trains (no engine)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from pytest_infer.tiny import arith
from pytest_infer.tiny import model as tinymodel

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("transformers")

from pytest_infer.tiny import train as tinytrain  # noqa: E402 - only once torch is known to be there


def test_shipped_weights_match_the_recorded_checksum() -> None:
    data = tinymodel.WEIGHTS.read_bytes()
    assert hashlib.sha256(data).hexdigest() == tinymodel.WEIGHTS_SHA256
    assert tinymodel.verify_weights() == data


def test_tampered_weights_fail_the_build_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "w.safetensors"
    data = bytearray(tinymodel.WEIGHTS.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(tinymodel, "WEIGHTS", bad)
    with pytest.raises(tinymodel.WeightsMismatch) as info:
        tinymodel.build_tiny_model(tmp_path / "m")
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "m").exists()
    monkeypatch.setattr(tinymodel, "WEIGHTS", tmp_path / "missing.safetensors")
    with pytest.raises(tinymodel.WeightsMismatch, match=r"missing\.safetensors: cannot read"):
        tinymodel.verify_weights(tinymodel.WEIGHTS)


def test_shipped_weights_have_the_layout_vllm_loads() -> None:
    from safetensors import safe_open

    with safe_open(str(tinymodel.WEIGHTS), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 -- not a dict
        n = tinymodel.MODEL_SPEC["num_hidden_layers"]
        # vLLM shares the target's embedding and head with the MTP draft: the copies must be equal.
        assert torch.equal(f.get_tensor(f"model.layers.{n}.embed_tokens.weight"),
                           f.get_tensor("model.embed_tokens.weight"))
        assert torch.equal(f.get_tensor(f"model.layers.{n}.shared_head.head.weight"), f.get_tensor("lm_head.weight"))
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16
    assert shapes == tinymodel._weight_shapes()


@pytest.fixture(scope="module")
def trained() -> tinytrain.TinyGlm:
    return tinytrain.load(tinymodel.WEIGHTS)


def test_shipped_model_adds_in_torch(trained: tinytrain.TinyGlm) -> None:
    # The engine test measures the same thing through vLLM; this one runs anywhere torch does.
    # Seen 2026-11-23: 0.996 on 500 problems (0.994 through vLLM).
    assert tinytrain.exact_match(trained, 200) >= 0.9


def test_shipped_model_is_wrong_on_another_task(trained: tinytrain.TinyGlm) -> None:
    # "Can be wrong": subtraction is not addition; an answer-anything model would pass the test above.
    probs = arith.problems("test", 50)
    ids = torch.tensor([tinytrain.encode(f"{p.a}-{p.b}=") for p in probs if len(str(p.a)) + len(str(p.b)) == 6])
    out = tinytrain.greedy(trained, ids, 5)
    right = [tinytrain.decode(row[ids.shape[1]:]).split("\n")[0] == str(p.a - p.b)
             for p, row in zip([p for p in probs if len(str(p.a)) + len(str(p.b)) == 6], out.tolist(), strict=True)]
    assert sum(right) < len(right) / 2


def _tiny_run() -> dict[str, torch.Tensor]:
    cfg = tinytrain.TrainConfig(main_steps=3, main_batch=16, mtp_steps=3, mtp_batch=4, random_prompts=4,
                                random_prompt_lens=(8,), random_gen_len=3, arith_prompts=16, arith_gen_len=2)
    model, _, _ = tinytrain.train(cfg, log=False)
    return tinytrain.checkpoint_tensors(model)


def test_training_is_deterministic() -> None:
    first, second = _tiny_run(), _tiny_run()
    assert first.keys() == second.keys()
    changed = [k for k in first if not torch.equal(first[k], second[k])]
    assert not changed
    # ...and the steps did something: the MTP block moved away from its initialisation too.
    init = tinytrain.checkpoint_tensors(tinytrain.init_model())
    n = tinymodel.MODEL_SPEC["num_hidden_layers"]
    for key in ("model.layers.0.self_attn.q_proj.weight", f"model.layers.{n}.eh_proj.weight"):
        assert not torch.equal(first[key], init[key]), key


def test_forward_matches_transformers_glm4moe(trained: tinytrain.TinyGlm) -> None:
    """The main-model forward we train is transformers' Glm4MoeForCausalLM on the same weights (with the
    router bias and the attention biases non-zero, so a dropped term shows)."""
    from transformers import Glm4MoeConfig, Glm4MoeForCausalLM

    model = tinytrain.load(tinymodel.WEIGHTS)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, tinytrain.Router):
                mod.e_score_correction_bias.copy_(torch.randn(mod.weight.shape[0], generator=gen) * 0.1)
    with tempfile.TemporaryDirectory() as d:
        tinymodel._write_config(Path(d))
        config = Glm4MoeConfig.from_pretrained(d)
        assert json.loads((Path(d) / "config.json").read_text())["num_hidden_layers"] == tinymodel.MODEL_SPEC[
            "num_hidden_layers"]
    hf = Glm4MoeForCausalLM(config).float().eval()
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    for i in range(config.first_k_dense_replace, config.num_hidden_layers):
        p = f"model.layers.{i}.mlp.experts"
        n = config.n_routed_experts
        sd[f"{p}.gate_up_proj"] = torch.stack(
            [torch.cat([sd.pop(f"{p}.{e}.gate_proj.weight"), sd.pop(f"{p}.{e}.up_proj.weight")]) for e in range(n)])
        sd[f"{p}.down_proj"] = torch.stack([sd.pop(f"{p}.{e}.down_proj.weight") for e in range(n)])
    missing, _ = hf.load_state_dict(sd, strict=False)
    assert not missing
    ids = torch.randint(4, tinymodel.VOCAB_SIZE, (3, 40), generator=gen)
    with torch.no_grad():
        ours, theirs = model.logits(ids), hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
