"""Llama-family weights in our GPT: SmolLM2, Llama 3.2 (LlamaForCausalLM), Qwen2.5 (Qwen2ForCausalLM)
and Qwen3 (Qwen3ForCausalLM), read from a hub directory and mapped by name.

    python model_handler.py path/to/SmolLM2-135M-Instruct --prompt_ids=1,9690   # sample from it
    python gpt_final_version.py --init_from=path/to/Qwen2.5-0.5B-Instruct --lora_rank=8 ...

These are our GPT with the options of config.py's second block (docs/gpt2-to-llama.md): RMSNorm,
SwiGLU, grouped-query attention, rotary positions with the model's base (and Llama 3's scaling),
Qwen2's biases on q, k and v, Qwen3's learned q/k norms and larger heads. q_proj, k_proj and
v_proj are stacked into our one qkv matrix, rows [q | k | v]. Anything in config.json this GPT
does not compute, and any tensor missing, unexpected or of the wrong shape, is refused by name.
tests/test_hub_llama.py proves logits and greedy tokens equal to `transformers` on random models.

Like pretrained.py, this module knows configs and dicts of tensors, not models.
"""
from __future__ import annotations

from pathlib import Path

import torch

from config import GPTConfig
from gptlib.errors import UserError

FAMILIES = ("llama", "qwen2", "qwen3")  # config.json's model_type
DEFAULT_CONTEXT = 2048  # block_size when none is asked for: the KV cache is allocated at this length, and
# the models' own 8k-40k positions would cost hundreds of MB per reply on a laptop; --block_size raises it


def is_llama_family(hub: dict) -> bool:
    return hub.get("model_type") in FAMILIES


def read_llama_config(hub: dict, source: Path, block_size: int = 0, dropout: float = 0.0) -> GPTConfig:
    """Our GPTConfig for a Llama-family config.json (`hub`)."""
    _refuse_unsupported(hub, source)
    rope = {**(hub.get("rope_scaling") or {}), **(hub.get("rope_parameters") or {})}  # transformers 4 / 5
    try:
        positions = int(hub["max_position_embeddings"])
        n_embd, n_head = int(hub["hidden_size"]), int(hub["num_attention_heads"])
        shape = dict(vocab_size=int(hub["vocab_size"]), n_layer=int(hub["num_hidden_layers"]), n_head=n_head,
                     n_embd=n_embd, n_kv_head=int(hub.get("num_key_value_heads") or n_head),
                     ffn_hidden=int(hub["intermediate_size"]), norm_eps=float(hub.get("rms_norm_eps", 1e-6)),
                     rope_theta=float(rope.get("rope_theta", hub.get("rope_theta", 10000.0))))
        head_dim = int(hub.get("head_dim") or n_embd // n_head)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{source} lacks a usable {hub.get('model_type')} shape ({err}): it needs hidden_size, "
                        "num_attention_heads, num_hidden_layers, intermediate_size, vocab_size and "
                        "max_position_embeddings.") from None
    if rope.get("rope_type", "default") == "llama3":
        shape.update(rope_scaling_factor=float(rope["factor"]), rope_low_freq_factor=float(rope["low_freq_factor"]),
                     rope_high_freq_factor=float(rope["high_freq_factor"]),
                     rope_original_context=int(rope["original_max_position_embeddings"]))
    if block_size > positions:
        raise UserError(f"--block_size={block_size} is more than the {positions} positions this model was trained "
                        f"at; use at most {positions}.")
    qwen3 = hub["model_type"] == "qwen3"
    return GPTConfig(**shape, block_size=block_size or min(positions, DEFAULT_CONTEXT), dropout=dropout,
                     head_dim=head_dim if head_dim * n_head != n_embd else 0, bias=False, attention="fast",
                     position="rope", activation="swiglu", norm="rmsnorm",
                     qkv_bias=hub["model_type"] == "qwen2" or bool(hub.get("attention_bias")),
                     qk_norm=qwen3, qk_norm_gain=qwen3, lm_head_bias=False,
                     tie_embeddings=bool(hub.get("tie_word_embeddings", False)))


def _refuse_unsupported(hub: dict, source: Path) -> None:
    """Variants this GPT does not compute are refused, not approximated."""
    rope = {**(hub.get("rope_scaling") or {}), **(hub.get("rope_parameters") or {})}
    checks = [
        (hub.get("hidden_act", "silu") == "silu", f"hidden_act {hub.get('hidden_act')!r} (SwiGLU here uses silu)"),
        (not hub.get("mlp_bias"), "biases in the MLP"),
        (not (hub.get("attention_bias") and hub["model_type"] == "llama"), "a bias on the attention's output"),
        (not hub.get("use_sliding_window"), "sliding-window attention"),
        (rope.get("rope_type", "default") in ("default", "llama3"), f"rope_type {rope.get('rope_type')!r}"),
        (int(hub.get("pretraining_tp", 1)) == 1, "pretraining_tp other than 1"),
    ]
    unsupported = [what for ok, what in checks if not ok]
    if unsupported:
        raise UserError(f"{source}: {'; '.join(unsupported)}: not supported by this GPT.")


# ==============================================================================================
# The weights


def llama_to_ours(hub_weights: dict[str, torch.Tensor], config: GPTConfig, source: str) -> dict[str, torch.Tensor]:
    """The hub's tensors under our GPT's names, q/k/v stacked into qkv; refuses, by name, any
    tensor missing, unexpected or of the wrong shape."""
    found = {name.removeprefix("model."): tensor for name, tensor in hub_weights.items()
             if not name.endswith("rotary_emb.inv_freq")}  # older files keep the rotary table: ours is computed
    if config.tie_embeddings:
        tied = found.pop("lm_head.weight", None)  # save_pretrained drops a tied copy; some files keep it
        if tied is not None and not torch.equal(tied, found.get("embed_tokens.weight", tied)):
            raise UserError(f"{source}: lm_head.weight differs from embed_tokens.weight, but config.json ties them.")
    expected = _expected_shapes(config)
    problems = [f"{name} is missing" for name in expected if name not in found]
    problems += [f"{name} is unexpected" for name in found if name not in expected]
    problems += [f"{name} is {tuple(found[name].shape)}, expected {shape}" for name, shape in expected.items()
                 if name in found and tuple(found[name].shape) != shape]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise UserError(f"{source} does not fit its config.json: {shown}.")
    found = {name: tensor.float() for name, tensor in found.items()}
    ours = {"token_embedding.weight": found["embed_tokens.weight"], "ln_f.weight": found["norm.weight"]}
    ours["lm_head.weight"] = ours["token_embedding.weight"] if config.tie_embeddings else found["lm_head.weight"]
    for i in range(config.n_layer):
        ours.update({f"blocks.{i}.{name}": tensor for name, tensor in _layer(found, f"layers.{i}.", config).items()})
    return {name: tensor.contiguous() for name, tensor in ours.items()}


def _layer(found: dict, prefix: str, config: GPTConfig) -> dict[str, torch.Tensor]:
    """One decoder layer's tensors under our Block's names."""
    def hub(name):
        return found[prefix + name]

    ours = {"attn.qkv.weight": torch.cat([hub(f"self_attn.{p}_proj.weight") for p in "qkv"]),
            "attn.proj.weight": hub("self_attn.o_proj.weight"), "ffwd.gate.weight": hub("mlp.gate_proj.weight"),
            "ffwd.up.weight": hub("mlp.up_proj.weight"), "ffwd.proj.weight": hub("mlp.down_proj.weight"),
            "ln1.weight": hub("input_layernorm.weight"), "ln2.weight": hub("post_attention_layernorm.weight")}
    if config.qkv_bias:
        ours["attn.qkv.bias"] = torch.cat([hub(f"self_attn.{p}_proj.bias") for p in "qkv"])
    if config.qk_norm_gain:
        ours["attn.q_norm.weight"], ours["attn.k_norm.weight"] = hub("self_attn.q_norm.weight"), hub("self_attn.k_norm.weight")
    return ours


def _expected_shapes(config: GPTConfig) -> dict[str, tuple]:
    C, V, hs, F = config.n_embd, config.vocab_size, config.head_size, config.ffn_hidden
    q, kv = config.n_head * hs, config.kv_heads * hs
    shapes = {"embed_tokens.weight": (V, C), "norm.weight": (C,)}
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    for i in range(config.n_layer):
        layer = {"self_attn.q_proj.weight": (q, C), "self_attn.k_proj.weight": (kv, C), "self_attn.v_proj.weight": (kv, C),
                 "self_attn.o_proj.weight": (C, q), "mlp.gate_proj.weight": (F, C), "mlp.up_proj.weight": (F, C),
                 "mlp.down_proj.weight": (C, F), "input_layernorm.weight": (C,), "post_attention_layernorm.weight": (C,)}
        if config.qkv_bias:
            layer.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,)})
        if config.qk_norm_gain:
            layer.update({"self_attn.q_norm.weight": (hs,), "self_attn.k_norm.weight": (hs,)})
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    return shapes
