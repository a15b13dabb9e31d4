"""Tiny GLM-4.5-style MoE model (with one MTP layer), trained on 3-digit addition, for real vLLM.

No model is downloaded: the config and a character-level tokenizer are generated locally; the
weights ship with the package (``data/tiny-glm4moe-mtp.safetensors``), made by
``python -m pytest_infer.tiny.train`` (deterministic, minutes on two cores) and checked against the
sha256 recorded here. Trained, the model can be wrong: it answers ``arith`` problems, so accuracy
checks have something to lose. The shapes are chosen for vLLM's CPU engine:

* head_dim 32: the CPU attention backend accepts head sizes {32, 64, 80, ...} only, and an
  fp8 KV cache needs the head size divisible by 32.
* first_k_dense_replace=1: layer 0 is dense, layer 1 and the MTP block are MoE. vLLM's MTP
  draft model raises if its block has no MoE layer.
* The MTP layer lives at index ``num_hidden_layers`` with the names vLLM's
  ``glm4_moe_mtp.py`` loader expects; transformers does not write it.

Run ``python -m pytest_infer.tiny.model OUT_DIR``. Heavy imports (transformers, tokenizers) happen
inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# Bump when the output changes in any way, so stale cached directories get rebuilt.
BUILDER_VERSION = "2"
INIT_STD = 0.02
MARKER_NAME = ".tinymodel.json"
# Written by `python -m pytest_infer.tiny.train WEIGHTS`; retraining changes the bytes, so update both.
WEIGHTS = Path(__file__).resolve().parent / "data" / "tiny-glm4moe-mtp.safetensors"
WEIGHTS_SHA256 = "374341537267ede0a33428200b3059c44dec41a1299e3cd97adf875cb1f97a35"


class WeightsMismatch(RuntimeError):
    """The shipped weights file is missing or is not the one this module was released with."""

# Special tokens come first so their ids are stable; the role tokens keep chat prompts short.
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")
# One token per character: digits must be separate tokens for the arithmetic training task.
CHARS: str = "\n" + "".join(chr(c) for c in range(32, 127))
VOCAB_SIZE = 128  # padded with reserved special tokens so the tokenizer matches the embedding

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\\n' + m['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Architecture hyper-parameters (fed to transformers' Glm4MoeConfig).
MODEL_SPEC: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 256,  # dense layer(s)
    "moe_intermediate_size": 64,  # each routed / shared expert
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # GQA
    "head_dim": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "attention_bias": True,  # GLM-4.5 has q/k/v biases
    "use_qk_norm": False,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 1,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "norm_topk_prob": True,
    "routed_scaling_factor": 1.0,
    "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    "num_nextn_predict_layers": 1,
    "initializer_range": INIT_STD,
}


def _special_tokens() -> list[str]:
    reserved = VOCAB_SIZE - 4 - len(ROLE_TOKENS) - len(CHARS)
    assert reserved >= 0, "vocabulary too small for the character set"
    return [PAD, BOS, EOS, UNK, *ROLE_TOKENS, *(f"<|reserved_{i}|>" for i in range(reserved))]


def token_ids() -> dict[str, int]:
    """bos/eos/pad/unk ids (stable: specials are laid out first)."""
    specials = _special_tokens()
    return {
        name: specials.index(tok) for name, tok in (("pad", PAD), ("bos", BOS), ("eos", EOS), ("unk", UNK))
    }


def recipe_hash() -> str:
    """Hash of everything that determines the output (not of the output itself)."""
    recipe = {
        "version": BUILDER_VERSION,
        "weights_sha256": WEIGHTS_SHA256,
        "spec": MODEL_SPEC,
        "chars": CHARS,
        "specials": _special_tokens(),
        "chat_template": CHAT_TEMPLATE,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over every file's relative path and bytes (the marker file excluded)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != MARKER_NAME):
        h.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def is_built(model_dir: Path) -> bool:
    """True if ``model_dir`` holds a complete build of the current recipe, untouched since."""
    marker = Path(model_dir) / MARKER_NAME
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(info, dict)
        and info.get("recipe") == recipe_hash()
        and info.get("fingerprint") == model_fingerprint(model_dir)
    )


def build_tiny_model(out_dir: Path) -> Path:
    """Write the tiny model to ``out_dir`` (skipped if already built) and return the path.

    The build happens in a sibling temp dir that is renamed into place, so an interrupted
    build never leaves a half-written model where vLLM would look for one.
    """
    out_dir = Path(out_dir).resolve()
    if is_built(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the model dir should be readable like any other
    try:
        _write_model(tmp)
        marker = {"recipe": recipe_hash(), "fingerprint": model_fingerprint(tmp)}
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        _swap_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if is_built(out_dir):
        return  # a concurrent builder (e.g. another xdist worker) finished first: keep its copy
    if out_dir.exists():
        # Stale or foreign content: move it aside first (rename is atomic, rmtree is not).
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        # A concurrent builder (e.g. another xdist worker) won the race; accept its result.
        if not is_built(out_dir):
            raise


def _write_model(dest: Path) -> None:
    _write_config(dest)
    _write_weights(dest)
    _write_tokenizer(dest)


# Generic PreTrainedConfig fields that mean nothing here (and transformers_version would tie
# the bytes to the installed transformers).
_CONFIG_NOISE = (
    "transformers_version",
    "_name_or_path",
    "id2label",
    "label2id",
    "chunk_size_feed_forward",
    "problem_type",
    "return_dict",
    "output_attentions",
    "output_hidden_states",
    "is_encoder_decoder",
)


def _write_config(dest: Path) -> None:
    from transformers import Glm4MoeConfig

    ids = token_ids()
    config = Glm4MoeConfig(
        **MODEL_SPEC,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        architectures=["Glm4MoeForCausalLM"],
        dtype="bfloat16",
    )
    data = config.to_dict()
    # Keep the file independent of the installed transformers version, and make sure the
    # field vLLM reads for the MTP draft is spelled out (transformers aliases it).
    for key in _CONFIG_NOISE:
        data.pop(key, None)
    data["num_nextn_predict_layers"] = MODEL_SPEC["num_nextn_predict_layers"]
    data["head_dim"] = MODEL_SPEC["head_dim"]
    (dest / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    gen = {"bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"]}
    (dest / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")


def _weight_shapes() -> dict[str, tuple[int, ...]]:
    """Checkpoint tensor names/shapes in the original GLM-4.5 layout (what vLLM loads)."""
    s = MODEL_SPEC
    h, v, hd = s["hidden_size"], s["vocab_size"], s["head_dim"]
    q, kv = s["num_attention_heads"] * hd, s["num_key_value_heads"] * hd
    inter, moe_inter = s["intermediate_size"], s["moe_intermediate_size"]
    n_layers, n_mtp = s["num_hidden_layers"], s["num_nextn_predict_layers"]

    def mlp(prefix: str, i: int) -> dict[str, tuple[int, ...]]:
        return {
            f"{prefix}.gate_proj.weight": (i, h),
            f"{prefix}.up_proj.weight": (i, h),
            f"{prefix}.down_proj.weight": (h, i),
        }

    def block(idx: int) -> dict[str, tuple[int, ...]]:
        p = f"model.layers.{idx}"
        out: dict[str, tuple[int, ...]] = {
            f"{p}.input_layernorm.weight": (h,),
            f"{p}.post_attention_layernorm.weight": (h,),
            f"{p}.self_attn.q_proj.weight": (q, h),
            f"{p}.self_attn.q_proj.bias": (q,),
            f"{p}.self_attn.k_proj.weight": (kv, h),
            f"{p}.self_attn.k_proj.bias": (kv,),
            f"{p}.self_attn.v_proj.weight": (kv, h),
            f"{p}.self_attn.v_proj.bias": (kv,),
            f"{p}.self_attn.o_proj.weight": (h, q),
        }
        if idx < s["first_k_dense_replace"]:
            out.update(mlp(f"{p}.mlp", inter))
            return out
        out[f"{p}.mlp.gate.weight"] = (s["n_routed_experts"], h)
        out[f"{p}.mlp.gate.e_score_correction_bias"] = (s["n_routed_experts"],)
        for e in range(s["n_routed_experts"]):
            out.update(mlp(f"{p}.mlp.experts.{e}", moe_inter))
        out.update(mlp(f"{p}.mlp.shared_experts", moe_inter * s["n_shared_experts"]))
        return out

    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for i in range(n_layers):
        shapes.update(block(i))
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (v, h)
    for i in range(n_layers, n_layers + n_mtp):
        # MTP layer: the full decoder block plus its own norms, projection, head and embedding.
        shapes.update(block(i))
        p = f"model.layers.{i}"
        shapes[f"{p}.enorm.weight"] = (h,)
        shapes[f"{p}.hnorm.weight"] = (h,)
        shapes[f"{p}.eh_proj.weight"] = (h, 2 * h)
        shapes[f"{p}.shared_head.norm.weight"] = (h,)
        shapes[f"{p}.shared_head.head.weight"] = (v, h)
        shapes[f"{p}.embed_tokens.weight"] = (v, h)
    return shapes


def verify_weights(path: Path | None = None) -> bytes:
    """The trained weights' bytes (default: the shipped file), if their sha256 is the recorded one."""
    path = WEIGHTS if path is None else path
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsMismatch(f"{path}: cannot read the trained weights ({exc.strerror})") from None
    got = hashlib.sha256(data).hexdigest()
    if got != WEIGHTS_SHA256:
        raise WeightsMismatch(
            f"{path}: sha256 {got} is not the recorded WEIGHTS_SHA256 {WEIGHTS_SHA256} "
            "(retrain with python -m pytest_infer.tiny.train and update both)"
        )
    return data


def _write_weights(dest: Path) -> None:
    (dest / "model.safetensors").write_bytes(verify_weights())
    (dest / "model.safetensors").chmod(0o644)


def _write_tokenizer(dest: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models

    specials = _special_tokens()
    vocab = {tok: i for i, tok in enumerate([*specials, *CHARS])}
    assert len(vocab) == VOCAB_SIZE
    # BPE with no merges and no pre-tokenizer = exactly one token per character.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()  # join characters back without inserted spaces
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.save(str(dest / "tokenizer.json"), pretty=True)

    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(specials)
    }
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_SPEC["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": added,
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the tiny GLM-4.5-style test model (trained weights).")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        path = build_tiny_model(args.out_dir)
    except WeightsMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path} {model_fingerprint(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
