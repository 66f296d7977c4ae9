"""GPT-2's published weights in our GPT: read a Hugging Face hub directory, map its tensors by name.

    pip install -r requirements-pretrained.txt                       # safetensors, huggingface_hub
    python gpt_final_version.py --init_from=gpt2 --block_size=256    # downloaded once into the hub's cache
    python gpt_final_version.py --init_from=path/to/dir              # config.json + model.safetensors (or pytorch_model.bin)
    python model_handler.py path/to/dir --prompt_ids=464,3290        # sample from it directly

A hub directory holds config.json (the shape), model.safetensors or pytorch_model.bin (the
weights) and the tokenizer's files. GPT-2's shape is our GPT with four switches (GPTConfig's
qkv_bias, lm_head_bias, tie_embeddings and activation="gelu_tanh"); its tensors have other names,
and its linear layers are stored as Conv1D, (in, out), so each is transposed into nn.Linear's (out,
in). Any tensor missing, unexpected or of the wrong shape is refused by name: a model that loads
is GPT-2, never a silently half-initialised one. tests/test_pretrained.py proves it against
`transformers` (logits to 1e-5, identical greedy tokens), which is needed by the tests only.

This module knows configs and dicts of tensors, not models (like checkpoint.py): callers build the
GPT from the config it gives and load the weights with checkpoint.load_weights.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

from config import GPTConfig
from gptlib import hub_llama
from gptlib.errors import UserError

HUB_NAMES = {  # what --init_from=NAME downloads, and the repository it comes from
    "gpt2": "openai-community/gpt2",  # 124M parameters
    "gpt2-medium": "openai-community/gpt2-medium",  # 350M
    "gpt2-large": "openai-community/gpt2-large",  # 774M
    "gpt2-xl": "openai-community/gpt2-xl",  # 1558M
    # The Llama family (hub_llama.py); any other "owner/name" of these architectures downloads too
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-360m-instruct": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "qwen2.5-0.5b-instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "llama-3.2-1b-instruct": "meta-llama/Llama-3.2-1B-Instruct",  # gated: accept the licence on the hub, then `hf auth login`
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in the order they are tried
SHARD_INDEX = "model.safetensors.index.json"  # larger models: the weights in shards, this file maps tensors to them
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "tokenizer_config.json")
DOWNLOAD_PATTERNS = ["config.json", "generation_config.json", "model.safetensors", "model-*.safetensors", SHARD_INDEX,
                     *TOKENIZER_FILES]  # not the TF, Flax or ONNX copies
INSTALL_HINT = "pip install -r requirements-pretrained.txt"
# Tensors the hub's files keep beside the weights that are not parameters: the causal mask
# (attn.bias, attn.masked_bias in older files). Ours is built in the model, so they are skipped.
HUB_BUFFERS = ("attn.bias", "attn.masked_bias")

# ==============================================================================================
# Where the files are: a local directory, or a name downloaded into the hub's usual cache


def is_pretrained_source(source: str) -> bool:
    """--init_from names a hub model or a directory (a project checkpoint is a .pt file)."""
    return source in HUB_NAMES or Path(source).is_dir() or _is_repo_id(source)


def _is_repo_id(source: str) -> bool:
    """owner/name, as the hub names models (and not a file of ours that is missing)."""
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None and not source.endswith(".pt")


def resolve(source: str) -> Path:
    """The local directory of `source`: itself (a directory of that name wins), or the hub's cached
    snapshot of a named model."""
    path = Path(source)
    if (source in HUB_NAMES or _is_repo_id(source)) and not path.is_dir():
        return _download(source)
    if not path.is_dir():
        known = ", ".join(HUB_NAMES)
        raise UserError(f"{source!r} is neither a directory nor a known model name ({known}).")
    if not (path / "config.json").is_file():
        raise UserError(f"{source} has no config.json: a pretrained model is a directory in the Hugging Face hub's "
                        "layout (config.json, model.safetensors or pytorch_model.bin, tokenizer files).")
    return path


def _download(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"--init_from={name} downloads from the Hugging Face hub, which needs huggingface_hub: "
                        f"{INSTALL_HINT}") from None
    try:  # the hub's own cache (~/.cache/huggingface, or $HF_HOME): a second run reads it offline
        return Path(snapshot_download(HUB_NAMES.get(name, name), allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as err:  # no network, a proxy, the hub down: one line, not a traceback
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"could not download {name} from the Hugging Face hub ({first_line}). Check the network, "
                        "or copy the model's hub directory here and name the directory instead.") from None


def tokenizer_files(directory: Path) -> dict[str, str]:
    """The tokenizer's files in a hub directory, by name (tokenizer.py's GPT2Tokenizer reads them)."""
    return {name: str(directory / name) for name in TOKENIZER_FILES if (directory / name).is_file()}


def hub_tokenizer(state: dict):
    """GPT-2's tokenizer from the files beside a loaded hub model's weights (load_pretrained's
    state), or None where its directory has none (then only token ids go in and out)."""
    from gptlib import tokenizer  # only here: loading weights alone does not need it

    if not state["pretrained"]["tokenizer_files"]:
        return None
    if state["model_config"].get("norm") == "rmsnorm":  # the Llama family: the `tokenizers` library, the model's template
        from gptlib.hf_tokenizer import HubTokenizer
        return HubTokenizer.from_directory(state["pretrained"]["directory"])
    return tokenizer.GPT2Tokenizer.from_directory(state["pretrained"]["directory"])


# ==============================================================================================
# The shape: config.json -> GPTConfig


def read_config(directory: Path, block_size: int = 0, dropout: float = 0.0) -> GPTConfig:
    """Our GPTConfig for the hub model in `directory`. `block_size` (0: the model's own) may shrink
    the context to save memory; it cannot grow past the positions GPT-2 learned."""
    hub = _read_json(directory / "config.json")
    source = directory / "config.json"
    if hub_llama.is_llama_family(hub):
        return hub_llama.read_llama_config(hub, source, block_size, dropout)
    if hub.get("model_type", "gpt2") != "gpt2":
        raise UserError(f"{source}: model_type {hub['model_type']!r}; this GPT loads gpt2 and "
                        f"{', '.join(hub_llama.FAMILIES)} models.")
    try:
        n_embd, positions = int(hub["n_embd"]), int(hub.get("n_positions", hub.get("n_ctx")))
        shape = dict(n_layer=int(hub["n_layer"]), n_head=int(hub["n_head"]), n_embd=n_embd,
                     vocab_size=int(hub["vocab_size"]))
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{source} lacks a usable GPT-2 shape ({err}): it needs n_layer, n_head, n_embd, "
                        "n_positions and vocab_size.") from None
    _refuse_unsupported(hub, source, n_embd)
    if block_size > positions:
        raise UserError(f"--block_size={block_size} is more than the {positions} positions this model learned; "
                        f"use at most {positions}.")
    return GPTConfig(**shape, block_size=block_size or positions, dropout=dropout, bias=True, attention="fast",
                     position="learned", activation="gelu_tanh", qkv_bias=True, lm_head_bias=False,
                     tie_embeddings=True)


def positions_of(directory: Path) -> int:
    """How many positions the hub model learned (its wpe rows; a rotary model's trained context)."""
    hub = _read_json(directory / "config.json")
    if hub_llama.is_llama_family(hub):
        return int(hub["max_position_embeddings"])
    return int(hub.get("n_positions", hub.get("n_ctx")))


def _refuse_unsupported(hub: dict, source: Path, n_embd: int) -> None:
    """GPT-2 variants this GPT does not compute are refused, not approximated."""
    checks = [
        (hub.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"),
         f"activation_function {hub.get('activation_function')!r} (GPT-2's is gelu_new, the tanh approximation)"),
        (abs(float(hub.get("layer_norm_epsilon", 1e-5)) - 1e-5) < 1e-12,
         f"layer_norm_epsilon {hub.get('layer_norm_epsilon')} (ours is PyTorch's 1e-5, GPT-2's too)"),
        (hub.get("n_inner") in (None, 4 * n_embd), f"n_inner {hub.get('n_inner')} (ours is 4 x n_embd)"),
        (hub.get("tie_word_embeddings", True), "untied word embeddings"),
        (hub.get("scale_attn_weights", True) and not hub.get("scale_attn_by_inverse_layer_idx", False),
         "attention scaled other than by 1/sqrt(head size)"),
    ]
    unsupported = [what for ok, what in checks if not ok]
    if unsupported:
        raise UserError(f"{source}: {'; '.join(unsupported)}: not supported by this GPT.")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not readable JSON ({err}).") from None


# ==============================================================================================
# The weights: the hub's files -> tensors under our names


def read_hub_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors (preferred: it cannot run code) or pytorch_model.bin
    (read with weights_only=True, so it cannot either)."""
    safetensors_file, bin_file = (directory / name for name in WEIGHT_FILES)
    index = directory / SHARD_INDEX
    if safetensors_file.is_file() or index.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{safetensors_file} needs the safetensors package: {INSTALL_HINT}") from None
        weights = {}
        for shard in [safetensors_file] if safetensors_file.is_file() else _shards(index):
            try:
                weights.update(load_file(str(shard)))
            except Exception as err:  # missing, truncated, not safetensors at all...
                raise UserError(f"{shard} is damaged or not a safetensors file ({_first_line(err)}).") from None
        return weights
    if bin_file.is_file():
        try:
            return torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"{bin_file} is damaged or holds more than tensors ({_first_line(err)}).") from None
    raise UserError(f"{directory} has no weights: expected {' or '.join(WEIGHT_FILES)}.")


def _shards(index: Path) -> list[Path]:
    """The files a sharded checkpoint's index names (its weight_map: tensor -> file), each once."""
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(f"{index} has no weight_map naming the shards; download the model again.")
    return [index.parent / name for name in sorted(set(weight_map.values()))]


def hub_to_ours(hub_weights: dict[str, torch.Tensor], config: GPTConfig, positions: int,
                source: str = "the weights") -> dict[str, torch.Tensor]:
    """The hub's GPT-2 tensors under our GPT's names and layout, for a model of `config` (whose
    block_size may be below the `positions` the model learned: the first block_size rows are kept).

    Refuses, naming them, any tensor missing, unexpected or of the wrong shape."""
    found = {_strip_prefix(name): tensor for name, tensor in hub_weights.items()
             if _strip_prefix(name).split(".", 2)[-1] not in HUB_BUFFERS}  # h.N.attn.bias, not h.N.attn.c_attn.bias
    tied_output = found.pop("lm_head.weight", None)  # GPT-2 ties it to wte; save_pretrained usually drops it
    expected = _expected_hub_shapes(config, positions)
    problems = [f"{name} is missing" for name in expected if name not in found]
    problems += [f"{name} is unexpected" for name in found if name not in expected]
    problems += [f"{name} is {tuple(found[name].shape)}, expected {shape}" for name, shape in expected.items()
                 if name in found and tuple(found[name].shape) != shape]
    if tied_output is not None and "wte.weight" in found and not torch.equal(tied_output, found["wte.weight"]):
        problems.append("lm_head.weight differs from wte.weight (this GPT ties them)")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise UserError(f"{source} does not fit GPT-2's config.json: {shown}.")
    ours = {}
    for name, tensor in found.items():
        our_name, transpose = _our_name(name)
        ours[our_name] = (tensor.t() if transpose else tensor).contiguous().float()
    ours["position_embedding.weight"] = ours["position_embedding.weight"][:config.block_size].clone()
    ours["lm_head.weight"] = ours["token_embedding.weight"]  # tied: the same tensor under both names
    return ours


def _strip_prefix(name: str) -> str:
    """GPT2LMHeadModel writes transformer.h.0...; OpenAI's original files (and GPT2Model) write h.0..."""
    return name.removeprefix("transformer.")


def _expected_hub_shapes(config: GPTConfig, positions: int) -> dict[str, tuple]:
    C, V = config.n_embd, config.vocab_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (positions, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(config.n_layer):
        layer = {"ln_1.weight": (C,), "ln_1.bias": (C,), "ln_2.weight": (C,), "ln_2.bias": (C,),
                 "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),  # Conv1D: (in, out)
                 "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
                 "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
                 "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,)}
        shapes.update({f"h.{i}.{name}": shape for name, shape in layer.items()})
    return shapes


# hub name (after h.N.) -> (our name after blocks.N., stored as Conv1D and so transposed)
_LAYER_NAMES = {
    "ln_1.weight": ("ln1.weight", False), "ln_1.bias": ("ln1.bias", False),
    "ln_2.weight": ("ln2.weight", False), "ln_2.bias": ("ln2.bias", False),
    # c_attn's columns are [q of every head | k ... | v ...]: our qkv rows, in the same order
    "attn.c_attn.weight": ("attn.qkv.weight", True), "attn.c_attn.bias": ("attn.qkv.bias", False),
    "attn.c_proj.weight": ("attn.proj.weight", True), "attn.c_proj.bias": ("attn.proj.bias", False),
    "mlp.c_fc.weight": ("ffwd.up.weight", True), "mlp.c_fc.bias": ("ffwd.up.bias", False),
    "mlp.c_proj.weight": ("ffwd.proj.weight", True), "mlp.c_proj.bias": ("ffwd.proj.bias", False),
}
_TOP_NAMES = {"wte.weight": "token_embedding.weight", "wpe.weight": "position_embedding.weight",
              "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias"}


def _our_name(hub_name: str) -> tuple[str, bool]:
    if hub_name in _TOP_NAMES:
        return _TOP_NAMES[hub_name], False
    _, layer, rest = hub_name.split(".", 2)  # h.N.rest
    our_rest, transpose = _LAYER_NAMES[rest]
    return f"blocks.{layer}.{our_rest}", transpose


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ==============================================================================================
# All of it: what --init_from=DIR|NAME starts from, in the form of a checkpoint


def load_pretrained(source: str, block_size: int = 0, dropout: float = 0.0) -> dict:
    """A checkpoint-like dict for a hub model: model_kind, model_config (a plain dict), model (our
    weights) and `pretrained` (where it came from and its tokenizer files), so the training loop
    and ModelHandler treat it like a trained checkpoint of this project."""
    directory = resolve(source)
    config = read_config(directory, block_size, dropout)
    if config.norm == "rmsnorm":  # the Llama family
        weights = hub_llama.llama_to_ours(read_hub_weights(directory), config, str(directory))
    else:
        weights = hub_to_ours(read_hub_weights(directory), config, positions_of(directory), str(directory))
    return {
        "model_kind": "gpt",
        "model_config": dataclasses.asdict(config),
        "model": weights,
        "pretrained": {"source": source, "directory": str(directory.resolve()),
                       "tokenizer_files": tokenizer_files(directory)},
    }
