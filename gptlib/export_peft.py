"""A LoRA run as a PEFT adapter over its base in the Hugging Face layout, for transformers + peft.

    python model_handler.py models/lora.pt --export_peft=exported/me
    # exported/me/base/     the base model, without the adapters (gptlib/export_hf.py)
    # exported/me/adapter/  adapter_config.json + adapter_model.safetensors, PEFT's own layout

    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("exported/me/base"), "exported/me/adapter")

Our LoRALinear computes W x + (alpha / rank) B (A x), with A (rank, in) and B (out, rank): PEFT's
lora_A.weight and lora_B.weight have the same shapes and its scaling is lora_alpha / r, so rank and
alpha are written as they are. Our attention's fused qkv layer becomes the hub's q_proj, k_proj and
v_proj (Llama family): the rows of B split per projection, as the base's qkv matrix is split, and
A, which all three share, copied to each (PEFT gives every module an A of its own). GPT-2 keeps
one fused c_attn, a Conv1D, hence fan_in_fan_out. The rows of the chat markers appended to a
tokenizer for fine-tuning (lora.TrainedRows) are PEFT's trainable tokens. tests/test_export_peft.py
checks that PeftModel gives our logits and greedy tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from config import GPTConfig
from gptlib import lora, pretrained, tokenizer
from gptlib.checkpoint import load_checkpoint
from gptlib.cli import apply
from gptlib.errors import UserError

PREFIX = "base_model.model."  # where PEFT puts the wrapped transformers model in its tensor names
# our adapted layers -> the hub's modules (Llama family; attn.qkv is split into three)
LLAMA_LAYERS = {"attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                "attn.proj": ("self_attn.o_proj",), "ffwd.gate": ("mlp.gate_proj",), "ffwd.up": ("mlp.up_proj",),
                "ffwd.proj": ("mlp.down_proj",)}
GPT2_LAYERS = {"attn.qkv": ("attn.c_attn",), "attn.proj": ("attn.c_proj",), "ffwd.up": ("mlp.c_fc",),
               "ffwd.proj": ("mlp.c_proj",)}


def export_peft(path: str, directory: str) -> dict[str, list[str]]:
    """Write the LoRA checkpoint at `path` as DIR/base (its base model, the Hugging Face layout) and
    DIR/adapter (PEFT's adapter_config.json and adapter_model.safetensors); the files written in each.
    A checkpoint without adapters, or a model transformers has no architecture for, is refused."""
    model, state = unmerged_lora_model(path)
    return write_peft(model, tokenizer.from_checkpoint(state), state["lora"]["rank"], state["lora"]["alpha"], directory)


def write_peft(model, vocab, rank: int, alpha: float, directory: str) -> dict[str, list[str]]:
    """`model`, a GPT with LoRA adapters (lora.add_adapters), as DIR/base and DIR/adapter."""
    from gptlib.export_hf import export_hf, family_of

    family = family_of(model.config)  # a UserError naming the options when there is none
    out = Path(directory)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already holds files; --export_peft writes into an empty or new directory "
                        "(nothing is overwritten).")
    base = export_hf(base_model(model), vocab, str(out / "base"))
    weights = adapter_tensors(model, family)
    config = adapter_config(model, rank, alpha, family, out / "base")
    adapter = out / "adapter"
    adapter.mkdir()
    from safetensors.torch import save_file  # export_hf has checked it is installed
    save_file(weights, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    (adapter / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"base": base, "adapter": sorted(p.name for p in adapter.iterdir())}


def unmerged_lora_model(path: str):
    """The LoRA checkpoint's model with its adapters kept apart from the base weights (what training
    ran; ModelHandler merges them), and the checkpoint; a checkpoint without adapters is refused."""
    from gpt_final_version import GPT
    from gptlib.build import assemble_lora

    if pretrained.is_pretrained_source(path):
        raise UserError(f"{path} holds published weights, not LoRA adapters: --export_peft writes a LoRA run "
                        "(--init_from=... --lora_rank=8); export a whole model with --export_hf=DIR.")
    state = load_checkpoint(path)
    if "lora" not in state:
        raise UserError(f"{path} trained every weight, so it has no LoRA adapters to write: --export_peft is for "
                        "a LoRA run (--lora_rank); export this model with --export_hf=DIR.")
    model = GPT(apply(GPTConfig(), state["model_config"]))
    assemble_lora(model, state, path)
    return model.eval(), state


def base_model(model):
    """A plain GPT with the base's weights: the adapted model without its LoRA deltas (the marker
    rows at the values they started from)."""
    from gpt_final_version import GPT

    plain = GPT(model.config)
    plain.load_state_dict(lora.base_weights(model))
    return plain.eval()


def adapter_tensors(model, family: str) -> dict[str, torch.Tensor]:
    """Our adapters under PEFT's tensor names (adapter_model.safetensors)."""
    config: GPTConfig = model.config
    layers, block = (GPT2_LAYERS, "transformer.h") if family == "gpt2" else (LLAMA_LAYERS, "model.layers")
    q, kv = config.n_head * config.head_size, config.kv_heads * config.head_size
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, lora.LoRALinear):
            continue
        _, index, ours = name.split(".", 2)  # blocks.{i}.attn.qkv
        hub = layers[ours]
        parts = torch.split(module.lora_B, [q, kv, kv]) if len(hub) == 3 else (module.lora_B,)
        for theirs, b in zip(hub, parts):
            out[f"{PREFIX}{block}.{index}.{theirs}.lora_A.weight"] = module.lora_A
            out[f"{PREFIX}{block}.{index}.{theirs}.lora_B.weight"] = b
    rows = trained_rows(model)
    if rows:
        embedding = "transformer.wte" if family == "gpt2" else "model.embed_tokens"
        out[f"{PREFIX}{embedding}.token_adapter.trainable_tokens_delta"] = model.token_embedding.lora_rows
        if not tied_rows(model):
            out[f"{PREFIX}lm_head.token_adapter.trainable_tokens_delta"] = model.lm_head.lora_rows
    return {name: tensor.detach().float().cpu().clone() for name, tensor in out.items()}  # A: a copy for each of q, k, v


def trained_rows(model) -> list[int]:
    """The token ids whose embedding (and output) rows the run trained: the appended chat markers."""
    first = lora.trained_rows_from(model)
    return [] if first is None else list(range(first, model.config.vocab_size))


def tied_rows(model) -> bool:
    return model.lm_head.lora_rows is model.token_embedding.lora_rows


def target_modules(model, family: str) -> list[str]:
    """The hub's module names PEFT adapts: the last part of the name (q_proj, c_attn), or two parts
    where the last is shared by a layer left alone (GPT-2's attn.c_proj and mlp.c_proj)."""
    layers = GPT2_LAYERS if family == "gpt2" else LLAMA_LAYERS
    adapted = {name.split(".", 2)[2] for name, module in model.named_modules() if isinstance(module, lora.LoRALinear)}
    everything = [theirs for hub in layers.values() for theirs in hub]
    chosen = [theirs for ours in adapted for theirs in layers[ours]]
    names = []
    for theirs in sorted(chosen):
        last = theirs.rsplit(".", 1)[1]
        shared = [other for other in everything if other.rsplit(".", 1)[1] == last]
        names.append(last if all(other in chosen for other in shared) else theirs)
    return sorted(set(names))


def adapter_config(model, rank: int, alpha: float, family: str, base_directory: Path) -> dict:
    """adapter_config.json: what peft's LoraConfig reads."""
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base_directory.resolve()),
              "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none",
              "target_modules": target_modules(model, family),
              "fan_in_fan_out": family == "gpt2",  # GPT-2's Conv1D stores its weight as (in, out)
              "use_rslora": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True,
              "modules_to_save": None}
    rows = trained_rows(model)
    if rows:  # the markers' rows: on the embedding, and on the output layer too when it is its own table
        embedding = "wte" if family == "gpt2" else "embed_tokens"
        config["trainable_token_indices"] = {embedding: rows} if tied_rows(model) else \
            {embedding: rows, "lm_head": rows}
    return config
