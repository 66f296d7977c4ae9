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

GPT-2-shaped models (learned positions, LayerNorm, GELU or ReLU, biases, a tied output) become a
GPT2LMHeadModel, the linear layers transposed into its Conv1D layout.

Our own tokenizers (characters, the BPE trained here, GPT-2's with the chat markers) go as a
tokenizer.json that encodes as ours does, with our chat layout as the chat template
(gptlib/export_tokenizer.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from config import GPTConfig
from gptlib.errors import UserError
from gptlib.export_tokenizer import end_ids, tokenizer_files

CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
           "gpt2": "GPT2LMHeadModel"}
GPT2_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}  # ours -> GPT-2's activation_function


def family_of(config: GPTConfig) -> str:
    """The transformers architecture that computes exactly this GPT, or a UserError naming the
    options that keep it from having one."""
    if config.position == "learned":
        return _gpt2_shaped(config)
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
                        + ". Llama-shaped models (rotary positions: SmolLM2, Qwen, Llama 3.2 and their fine-tunes) "
                        "and GPT-2-shaped ones (learned positions: GPT-2 and its fine-tunes) export.")
    return "qwen3" if config.qk_norm_gain else "qwen2" if config.qkv_bias else "llama"


def _gpt2_shaped(config: GPTConfig) -> str:
    """GPT-2's architecture: learned positions, LayerNorm, biases everywhere but the tied output."""
    differ = [f"--{name}={getattr(config, name)} (needs {value})" for name, value in
              {"attention": "fast", "norm": "layernorm", "bias": True, "qkv_bias": True, "tie_embeddings": True,
               "lm_head_bias": False, "qk_norm": False}.items() if getattr(config, name) != value]
    if config.activation not in GPT2_ACTIVATIONS:
        differ.append(f"--activation={config.activation} (needs one of {', '.join(GPT2_ACTIVATIONS)})")
    if config.ffn_hidden not in (0, 4 * config.n_embd) or config.head_dim not in (0, config.n_embd // config.n_head) \
            or config.n_kv_head not in (0, config.n_head) or abs(config.norm_eps - 1e-5) > 1e-12:
        differ.append("an MLP, head size, key/value heads or norm epsilon other than GPT-2's")
    if differ:
        raise UserError("this model has no transformers architecture to export to: " + "; ".join(differ)
                        + ". GPT-2-shaped models (learned positions) export as GPT2LMHeadModel, Llama-shaped "
                        "ones (rotary positions: SmolLM2, Qwen, Llama 3.2) as theirs.")
    return "gpt2"


def gpt2_config_json(config: GPTConfig) -> dict:
    """config.json for GPT2LMHeadModel; n_ctx is written too, which llama.cpp's converter reads."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
            "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head,
            "n_positions": config.block_size, "n_ctx": config.block_size, "n_inner": None,
            "activation_function": GPT2_ACTIVATIONS[config.activation], "layer_norm_epsilon": config.norm_eps,
            "tie_word_embeddings": True, "torch_dtype": "float32"}


def gpt2_weights(weights: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our tensors under GPT-2's names, the linear layers as its Conv1D stores them, (in, out)."""
    out = {"transformer.wte.weight": weights["token_embedding.weight"],
           "transformer.wpe.weight": weights["position_embedding.weight"],
           "transformer.ln_f.weight": weights["ln_f.weight"], "transformer.ln_f.bias": weights["ln_f.bias"]}
    layer_names = {"ln1": "ln_1", "ln2": "ln_2", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
                   "ffwd.up": "mlp.c_fc", "ffwd.proj": "mlp.c_proj"}
    for i in range(config.n_layer):
        for ours, theirs in layer_names.items():
            weight = weights[f"blocks.{i}.{ours}.weight"]
            out[f"transformer.h.{i}.{theirs}.weight"] = weight if ours.startswith("ln") else weight.t()
            out[f"transformer.h.{i}.{theirs}.bias"] = weights[f"blocks.{i}.{ours}.bias"]
    return {name: tensor.detach().float().cpu().contiguous() for name, tensor in out.items()}


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
    files written. The tokenizer goes with it: a hub model's own files, or ours as a tokenizer.json
    (gptlib/export_tokenizer.py; none when `vocab` is None). A directory that already holds files
    is refused: nothing is overwritten."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise UserError("--export_hf writes model.safetensors, which needs the safetensors package: "
                        "pip install -r requirements-pretrained.txt") from None
    config = model.config
    family = family_of(config)
    out = Path(directory)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already holds files; --export_hf writes into an empty or new directory "
                        "(nothing is overwritten).")
    if family == "gpt2":
        weights, hub_config = gpt2_weights(model.state_dict(), config), gpt2_config_json(config)
    else:
        weights, hub_config = hub_weights(model.state_dict(), config), config_json(config, family, vocab)
    texts = {}  # built before anything is written, so a refusal leaves no half-written directory
    if vocab is not None and vocab.kind == "hub":
        texts = {"tokenizer.json": vocab.tokenizer_json, "tokenizer_config.json": _json_text(vocab.config)}
    elif vocab is not None:
        texts = tokenizer_files(vocab, config.block_size)
    ends = end_ids(vocab) if vocab is not None else []
    if ends:
        hub_config["eos_token_id"] = ends[0] if len(ends) == 1 else ends
    generation = {key: hub_config[key] for key in ("bos_token_id", "eos_token_id") if key in hub_config}
    texts.update({"config.json": _json_text(hub_config), "generation_config.json": _json_text(generation)})
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
    return sorted(path.name for path in out.iterdir())


def _json_text(content: dict) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"
