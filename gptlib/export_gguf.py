"""A trained model as one GGUF file, for llama.cpp (llama-server, llama-cli), Ollama and the phone
apps that read GGUF, written with the `gguf` package (llama.cpp's own writer).

    python model_handler.py models/me.pt --export_gguf=exported/me.gguf                    # float16
    python model_handler.py models/me.pt --export_gguf=exported/me.gguf --gguf_dtype=float32

The architectures are the ones llama.cpp computes exactly as our GPT does: GPT-2-shaped models
(learned positions, LayerNorm, tanh GELU) as "gpt2", Llama-shaped ones as "llama", "qwen2" or
"qwen3" (gptlib/export_hf.family_of decides which). Two facts of llama.cpp's layout shape the
tensors: its "llama" graph turns q and k by adjacent pairs where ours (and transformers') turn
the two halves, so each head's rows of q and k are interleaved here, as llama.cpp's own converter
does ("qwen2" and "qwen3" turn halves, as we do); and Llama 3's rotary scaling travels as the
per-pair divisors of the frequencies (rope_freqs.weight). Matrices are stored in the chosen
dtype, norms and biases in float32, as the converter stores them.

The tokenizer travels in the metadata as llama.cpp's byte-level BPE ("gpt2"): the tokens in
GPT-2's printable stand-ins for bytes, the merges, each token's type, the end-of-turn token and
the chat template. A character model becomes a BPE whose tokens are its characters (a character
of several UTF-8 bytes is joined by merges of its bytes), so llama.cpp encodes text as ours does.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gpt_final_version import rotary_frequencies
from gptlib.byte_level import bytes_to_unicode
from gptlib.errors import UserError
from gptlib.export_hf import family_of, hub_weights
from gptlib.export_tokenizer import MARKERS_TEMPLATE, byte_level_tokens, end_ids, is_chat_vocab
from gptlib.hf_tokenizer import QWEN2_SPLIT, token_text
from gptlib.tokenizer import GPT2_SPLIT_PATTERN

INSTALL_HINT = "pip install -r requirements-export.txt"
DTYPES = ("float16", "float32", "bfloat16")
# Llama 3's pre-split (its tokenizer.json): digits in threes, letters after one other symbol.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def gguf_library():
    try:
        import gguf
    except ImportError:
        raise UserError(f"--export_gguf needs the `gguf` package (llama.cpp's writer): {INSTALL_HINT}") from None
    return gguf


# ----------------------------------------------------------------------------------------------
# Tensors under llama.cpp's names


def gguf_tensors(weights: dict[str, torch.Tensor], config, family: str) -> dict[str, torch.Tensor]:
    """Our tensors under llama.cpp's names and in its layout, float32."""
    if family != "gpt2":
        out = {llama_cpp_name(name): tensor for name, tensor in hub_weights(weights, config).items()}
        if family == "llama":  # its graph turns q and k by adjacent pairs
            for i in range(config.n_layer):
                for kind, heads in (("q", config.n_head), ("k", config.kv_heads)):
                    out[f"blk.{i}.attn_{kind}.weight"] = pairs_adjacent(out[f"blk.{i}.attn_{kind}.weight"], heads)
        if config.rope_scaling_factor:
            out["rope_freqs.weight"] = rotary_frequencies(replace(config, rope_scaling_factor=0.0)) / rotary_frequencies(config)
        return out
    out = {"token_embd.weight": weights["token_embedding.weight"], "output_norm.weight": weights["ln_f.weight"],
           "position_embd.weight": weights["position_embedding.weight"], "output_norm.bias": weights["ln_f.bias"]}
    for i in range(config.n_layer):
        out.update(gpt2_layer(weights, i))
    return {name: tensor.detach().float().cpu().contiguous() for name, tensor in out.items()}


# the Llama family's names in the hub's files -> in llama.cpp's (as its converter maps them)
LLAMA_CPP_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                   "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                   "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                   "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
WHOLE_MODEL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                     "lm_head.weight": "output.weight"}  # a tied output has none: llama.cpp reuses token_embd


def llama_cpp_name(hub_name: str) -> str:
    if hub_name in WHOLE_MODEL_NAMES:
        return WHOLE_MODEL_NAMES[hub_name]
    layer, rest = hub_name.removeprefix("model.layers.").split(".", 1)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{LLAMA_CPP_NAMES[module]}.{kind}"


def gpt2_layer(weights: dict, i: int) -> dict[str, torch.Tensor]:
    """One GPT-2 block: llama.cpp keeps q, k and v stacked, as we do."""
    names = {"ln1": "attn_norm", "attn.qkv": "attn_qkv", "attn.proj": "attn_output", "ln2": "ffn_norm",
             "ffwd.up": "ffn_up", "ffwd.proj": "ffn_down"}
    return {f"blk.{i}.{theirs}.{kind}": weights[f"blocks.{i}.{ours}.{kind}"]
            for ours, theirs in names.items() for kind in ("weight", "bias")}


def pairs_adjacent(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """Each head's rows reordered from (first half, second half) to (h0, h(d/2), h1, h(d/2+1), ...):
    a rotation of halves on these rows is a rotation of adjacent pairs on the result."""
    size = rows.shape[0] // heads
    return rows.reshape(heads, 2, size // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


# ----------------------------------------------------------------------------------------------
# The tokenizer as llama.cpp's byte-level BPE


def gguf_vocab(vocab, vocab_size: int) -> dict:
    """tokens, token types, merges and the pre-split name, for the model's `vocab_size` ids."""
    gguf = gguf_library()
    normal, control = gguf.TokenType.NORMAL, gguf.TokenType.CONTROL
    if vocab.kind == "hub":
        table = hub_table(vocab, gguf)
    elif vocab.kind == "char":
        table = char_table(vocab, normal)
    else:
        specials = set(vocab.specials.values())
        tokens = byte_level_tokens(vocab)
        table = {"tokens": tokens, "types": [control if i in specials else normal for i in range(len(tokens))],
                 "merges": [f"{tokens[left]} {tokens[right]}" for left, right, _ in vocab.merges], "pre": "gpt-2"}
    if not table["merges"]:  # llama.cpp refuses a BPE without merges; this one never applies: in UTF-8 no
        stand_in = bytes_to_unicode()  # continuation byte (0x80) ever follows an ASCII one ("A")
        table["merges"] = [f"{stand_in[0x41]} {stand_in[0x80]}"]
    missing = vocab_size - len(table["tokens"])
    if missing < 0:
        raise UserError(f"the tokenizer has {len(table['tokens'])} tokens but the model only {vocab_size} ids.")
    table["tokens"] += [f"[PAD{i}]" for i in range(len(table["tokens"]), vocab_size)]  # the model's rows past the tokenizer's last id
    table["types"] += [gguf.TokenType.UNUSED] * missing
    return table


def char_table(vocab, normal) -> dict:
    """Each character as the stand-ins of its UTF-8 bytes; merges join a character's bytes (a lead
    byte and its continuation bytes, which never belong to two characters), shortest first."""
    stand_in = bytes_to_unicode()
    tokens, merges = [], []
    for ch in vocab.chars:
        pieces = [stand_in[b] for b in ch.encode("utf-8", "surrogatepass")]
        tokens.append("".join(pieces))
        merges += [(n, "".join(pieces[:n]) + " " + pieces[n]) for n in range(1, len(pieces))]
    ordered = list(dict.fromkeys(merge for _, merge in sorted(merges)))
    return {"tokens": tokens, "types": [normal] * len(tokens), "merges": ordered, "pre": "gpt-2"}


def hub_table(vocab, gguf) -> dict:
    """A hub tokenizer.json's vocabulary, added tokens (special ones as control tokens) and merges."""
    data = json.loads(vocab.tokenizer_json)
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise UserError(f"llama.cpp reads byte-level BPE tokenizers; this one is {model.get('type')!r}.")
    by_id = {index: token for token, index in model["vocab"].items()}
    types = {}
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = text = added["content"]
        looks_special = text.startswith("<|") and text.endswith("|>")  # Qwen's <|fim_prefix|>..., as llama.cpp's converter
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") or looks_special else gguf.TokenType.USER_DEFINED
    size = max(by_id) + 1
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    kinds = [types.get(i, gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED) for i in range(size)]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model.get("merges", [])]
    return {"tokens": tokens, "types": kinds, "merges": merges, "pre": pre_split_name(data)}


def pre_split_name(data: dict) -> str:
    """llama.cpp's name for a tokenizer.json's pre-split (it has each one built in)."""
    pre = data.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [part.get("type") for part in parts]
    patterns = [part.get("pattern", {}).get("Regex") for part in parts if part.get("type") == "Split"]
    if kinds == ["Digits", "ByteLevel"]:
        return "smollm"
    if patterns == [QWEN2_SPLIT]:
        return "qwen2"
    if patterns == [LLAMA3_SPLIT]:
        return "llama-bpe"
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True) or patterns == [GPT2_SPLIT_PATTERN]:
        return "gpt-2"
    raise UserError(f"the tokenizer's pre-split ({json.dumps(pre)[:200]}) is not one llama.cpp is known to have "
                    "(GPT-2's, SmolLM2's, Qwen2's, Llama 3's); this model cannot be written as GGUF yet.")


# ----------------------------------------------------------------------------------------------
# The file


def export_gguf(model, vocab, path: str, dtype: str = "float16", name: str = "") -> dict:
    """Write `model` and its tokenizer to one GGUF file at `path`; returns a summary (architecture,
    tensors, bytes). An existing file is refused: nothing is overwritten."""
    gguf = gguf_library()
    if dtype not in DTYPES:
        raise UserError(f"--gguf_dtype={dtype} is not one of {', '.join(DTYPES)}.")
    config = model.config
    family = family_of(config)
    if family == "gpt2" and config.activation != "gelu_tanh":
        raise UserError(f"llama.cpp's GPT-2 computes the tanh GELU; this model has --activation={config.activation}. "
                        "Train with --activation=gelu_tanh to export to GGUF (--export_hf takes it as it is).")
    target = Path(path)
    if target.exists():
        raise UserError(f"{target} already exists; give --export_gguf a new file name (nothing is overwritten).")
    tensors = gguf_tensors(model.state_dict(), config, family)
    table = gguf_vocab(vocab, config.vocab_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), family)
    write_metadata(writer, gguf, config, family, dtype, name or target.stem)
    write_tokenizer(writer, vocab, table)
    for tensor_name, tensor in tensors.items():
        add_tensor(writer, gguf, tensor_name, tensor, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, target)  # whole or not at all
    return {"architecture": family, "tensors": len(tensors), "bytes": target.stat().st_size, "dtype": dtype}


def write_metadata(writer, gguf, config, family: str, dtype: str, name: str) -> None:
    file_types = {"float16": gguf.LlamaFileType.MOSTLY_F16, "float32": gguf.LlamaFileType.ALL_F32,
                  "bfloat16": gguf.LlamaFileType.MOSTLY_BF16}
    writer.add_name(name)
    writer.add_file_type(file_types[dtype])
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.ffn_hidden if family != "gpt2" else 4 * config.n_embd)
    writer.add_head_count(config.n_head)
    if family == "gpt2":
        writer.add_layer_norm_eps(config.norm_eps)
        return
    writer.add_head_count_kv(config.kv_heads)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_rope_dimension_count(config.head_size)
    writer.add_key_length(config.head_size)
    writer.add_value_length(config.head_size)
    writer.add_vocab_size(config.vocab_size)


def write_tokenizer(writer, vocab, table: dict) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(table["pre"])
    writer.add_token_list(table["tokens"])
    writer.add_token_types(table["types"])
    writer.add_token_merges(table["merges"])
    writer.add_add_bos_token(False)  # a chat template writes its own begin token where it has one
    writer.add_add_eos_token(False)
    ends, template = end_ids(vocab), chat_template(vocab)
    if ends:
        writer.add_eos_token_id(ends[0])
    if template:
        writer.add_eot_token_id(ends[0])
        writer.add_chat_template(template)
    named = getattr(vocab, "config", {})  # a hub tokenizer_config.json names its begin, unknown and padding tokens
    for key, add in (("bos_token", writer.add_bos_token_id), ("unk_token", writer.add_unk_token_id),
                     ("pad_token", writer.add_pad_token_id)):
        token = token_text(named.get(key))
        if token in vocab.specials:
            add(vocab.specials[token])


def chat_template(vocab) -> str:
    """A hub model's own chat template, our markers' for a chat model of ours, "" for a text model."""
    if vocab.kind == "hub":
        return vocab.config.get("chat_template") or ""
    return MARKERS_TEMPLATE if is_chat_vocab(vocab) else ""


def add_tensor(writer, gguf, name: str, tensor: torch.Tensor, dtype: str) -> None:
    """Matrices in `dtype`, vectors (norms, biases, rotary divisors) in float32."""
    data = tensor.numpy()
    if data.ndim == 1 or dtype == "float32":
        writer.add_tensor(name, data.astype(np.float32))
    elif dtype == "float16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        raw = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.BF16)
        writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.BF16)  # bytes; the writer knows the shape
