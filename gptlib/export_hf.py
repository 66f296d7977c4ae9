"""A trained model in the Hugging Face layout, for transformers and the tools that read it.

    python model_handler.py models/me.pt --export_hf=exported/me     # config.json, model.safetensors, tokenizer...

What this writes is gptlib/hub_llama.py run backwards: our GPT with the Llama family's options
(RMSNorm, SwiGLU, rotary positions, grouped-query attention; Qwen2's q/k/v biases; Qwen3's q/k
norms) becomes a LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM directory, our qkv matrix
split back into q_proj, k_proj and v_proj, with the hub tokenizer it was trained with
(tokenizer.json, and tokenizer_config.json holding the chat template and special tokens) and a
generation_config.json that ends a reply at the end-of-turn token. tests/test_export_hf.py loads
the directory with transformers' AutoModelForCausalLM and AutoTokenizer and checks our logits,
greedy tokens and chat template.

Not yet (issue 27): GPT-2-shaped models (ours with learned positions, GELU and LayerNorm), a
tokenizer.json for our character and BPE tokenizers, PEFT adapters, GGUF and Ollama.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from config import GPTConfig
from gptlib.errors import UserError

CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def family_of(config: GPTConfig) -> str:
    """The transformers architecture that computes exactly this GPT, or a UserError naming the
    options that keep it from having one."""
    wanted = {"attention": "fast", "position": "rope", "activation": "swiglu", "norm": "rmsnorm"}
    differ = [f"--{name}={getattr(config, name)} (needs {value})" for name, value in wanted.items()
              if getattr(config, name) != value]
    differ += [f"--{name}=true" for name in ("bias", "lm_head_bias") if getattr(config, name)]
    if config.qk_norm and not config.qk_norm_gain:
        differ.append("--qk_norm=true without learned gains (our QK-norm; Qwen3's has them)")
    if config.qkv_bias and config.qk_norm_gain:
        differ.append("q/k/v biases together with q/k norms (Qwen2 has the one, Qwen3 the other)")
    if differ:
        raise UserError("this model has no transformers architecture to export to: " + "; ".join(differ)
                        + ". The Llama family (SmolLM2, Qwen, Llama 3.2 and their fine-tunes) exports; "
                        "GPT-2-shaped models do not yet (issue 27).")
    return "qwen3" if config.qk_norm_gain else "qwen2" if config.qkv_bias else "llama"


def config_json(config: GPTConfig, family: str, vocab) -> dict:
    """The config.json transformers reads for this GPT."""
    hub = {"architectures": [CLASSES[family]], "model_type": family, "vocab_size": config.vocab_size,
           "hidden_size": config.n_embd, "intermediate_size": config.ffn_hidden,
           "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
           "num_key_value_heads": config.kv_heads, "head_dim": config.head_size,
           "max_position_embeddings": config.block_size, "rms_norm_eps": config.norm_eps,
           "rope_theta": config.rope_theta, "hidden_act": "silu", "tie_word_embeddings": config.tie_embeddings,
           "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32"}
    if config.rope_scaling_factor:
        hub["rope_scaling"] = {"rope_type": "llama3", "factor": config.rope_scaling_factor,
                               "low_freq_factor": config.rope_low_freq_factor,
                               "high_freq_factor": config.rope_high_freq_factor,
                               "original_max_position_embeddings": config.rope_original_context}
    eos = list(getattr(vocab, "eos_ids", []) or [])
    if eos:
        hub["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    bos = getattr(vocab, "specials", {}).get(getattr(vocab, "bos_token", None) or "")
    if bos is not None:
        hub["bos_token_id"] = bos
    return hub


def hub_weights(weights: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our tensors under the hub's names: qkv split into q, k and v (hub_llama.llama_to_ours backwards)."""
    q, kv = config.n_head * config.head_size, config.kv_heads * config.head_size
    out = {"model.embed_tokens.weight": weights["token_embedding.weight"], "model.norm.weight": weights["ln_f.weight"]}
    if not config.tie_embeddings:
        out["lm_head.weight"] = weights["lm_head.weight"]
    for i in range(config.n_layer):
        ours, hub = f"blocks.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias") if config.qkv_bias else ("weight",):
            stacked = weights[f"{ours}attn.qkv.{kind}"]
            for name, part in zip("qkv", torch.split(stacked, [q, kv, kv])):
                out[f"{hub}self_attn.{name}_proj.{kind}"] = part
        out.update({f"{hub}self_attn.o_proj.weight": weights[f"{ours}attn.proj.weight"],
                    f"{hub}mlp.gate_proj.weight": weights[f"{ours}ffwd.gate.weight"],
                    f"{hub}mlp.up_proj.weight": weights[f"{ours}ffwd.up.weight"],
                    f"{hub}mlp.down_proj.weight": weights[f"{ours}ffwd.proj.weight"],
                    f"{hub}input_layernorm.weight": weights[f"{ours}ln1.weight"],
                    f"{hub}post_attention_layernorm.weight": weights[f"{ours}ln2.weight"]})
        if config.qk_norm_gain:
            out[f"{hub}self_attn.q_norm.weight"] = weights[f"{ours}attn.q_norm.weight"]
            out[f"{hub}self_attn.k_norm.weight"] = weights[f"{ours}attn.k_norm.weight"]
    return {name: tensor.detach().float().cpu().contiguous() for name, tensor in out.items()}


def export_hf(model, vocab, directory: str) -> list[str]:
    """Write `model` (our GPT) and its tokenizer to `directory` in the Hugging Face layout; the
    files written. A directory that already holds files is refused: nothing is overwritten."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise UserError("--export_hf writes model.safetensors, which needs the safetensors package: "
                        "pip install -r requirements-pretrained.txt") from None
    config = model.config
    family = family_of(config)
    if vocab is not None and getattr(vocab, "kind", "") != "hub":
        raise UserError("--export_hf writes the tokenizer a hub model brought (tokenizer.json); this model's "
                        f"{getattr(vocab, 'kind', '?')} tokenizer has no such file yet (issue 27).")
    out = Path(directory)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already holds files; --export_hf writes into an empty or new directory "
                        "(nothing is overwritten).")
    out.mkdir(parents=True, exist_ok=True)
    save_file(hub_weights(model.state_dict(), config), str(out / "model.safetensors"), metadata={"format": "pt"})
    hub_config = config_json(config, family, vocab)
    generation = {key: hub_config[key] for key in ("bos_token_id", "eos_token_id") if key in hub_config}
    files = {"config.json": hub_config, "generation_config.json": generation}
    if vocab is not None:  # (None: the weights alone, as the tests of each architecture write them)
        files["tokenizer_config.json"] = vocab.config
        (out / "tokenizer.json").write_text(vocab.tokenizer_json, encoding="utf-8")
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return sorted(path.name for path in out.iterdir())
