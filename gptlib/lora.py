"""LoRA (Hu et al. 2021): fine-tune a trained GPT by learning a small low-rank change to some weights.

    python gpt_final_version.py --init_from=models/shakespeare_char.pt --lora_rank=8 --data=mine.txt
    python model_handler.py models/NAME.pt --export=models/merged.pt     # adapters merged: a plain checkpoint

A chosen nn.Linear W (by default the attention's qkv and proj and the MLP's layers) becomes W x + (alpha / rank) * B (A x), with A
(rank, in) and B (out, rank). B starts at zero, so step 0 is exactly the base model; only A and B
train, everything else is frozen, and a checkpoint keeps only them plus a reference to the base
(its path or hub name and a fingerprint of its weights). Merging computes W + (alpha / rank) B A
once, after which the model is an ordinary GPT again (no extra cost when sampling).

Why alpha / rank: the update's size then hardly depends on the rank, so a learning rate that works
at one rank works at another (the paper fixes alpha and tries ranks).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gptlib.errors import UserError

# The linear layers that can get adapters, by the end of their names, in groups --lora_targets names.
# The paper adapted the attention's only; adapting the MLP's too is what QLoRA found matches full
# fine-tuning, and what the hub's fine-tuning recipes do by default.
TARGET_GROUPS = {"attn": ("attn.qkv", "attn.proj"), "mlp": ("ffwd.up", "ffwd.gate", "ffwd.proj")}
DEFAULT_TARGETS = "attn,mlp"
PAPER_TARGETS = TARGET_GROUPS["attn"]  # what checkpoints from before --lora_targets adapted
ADAPTER_NAMES = ("lora_A", "lora_B", "lora_rows")


def target_layers(spec: str) -> tuple[str, ...]:
    """The layer-name endings a --lora_targets value means: groups (attn, mlp) or single layers
    (attn.qkv, ffwd.up, ...), comma-separated. (ffwd.gate exists in SwiGLU models only.)"""
    known = {layer for layers in TARGET_GROUPS.values() for layer in layers}
    layers: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        chosen = TARGET_GROUPS.get(item, (item,) if item in known else None)
        if chosen is None:
            raise UserError(f"--lora_targets: {item!r} is not a layer LoRA can adapt; give groups "
                            f"({', '.join(TARGET_GROUPS)}) or layers ({', '.join(sorted(known))}), comma-separated.")
        layers.extend(layer for layer in chosen if layer not in layers)
    return tuple(layers)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update. It keeps the base layer's parameter
    names (weight, bias), so base weights load into it unchanged and checkpoints stay readable."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same Parameters, not copies
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight

    def forward(self, x):
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def merged(self) -> nn.Linear:
        """An nn.Linear computing the same function: W + scale * B A."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.scale * self.lora_B @ self.lora_A)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear


class TrainedRows(nn.Module):
    """A frozen token embedding or output layer whose rows from `first` on (special ids appended
    for fine-tuning, such as the chat markers) learn: those rows are a small parameter of their own,
    `lora_rows`, so the optimizer keeps moments for a few rows, not the whole table, and a LoRA
    checkpoint stays small. It keeps the base's parameter names (weight, bias), as LoRALinear does.
    With tied embeddings the embedding and the output layer share one `lora_rows`."""

    def __init__(self, base: nn.Module, first: int, rows: nn.Parameter | None = None):
        super().__init__()
        self.first, self.is_embedding = first, isinstance(base, nn.Embedding)
        self.weight, self.bias = base.weight, getattr(base, "bias", None)
        self.lora_rows = rows if rows is not None else nn.Parameter(base.weight.detach()[first:].clone())

    def forward(self, x):
        if self.is_embedding:  # the appended ids read their rows from lora_rows
            out = F.embedding(x, self.weight)
            new = x >= self.first
            return torch.where(new[..., None], F.embedding((x - self.first).clamp(min=0), self.lora_rows), out)
        out = F.linear(x, self.weight, self.bias)
        extra = F.linear(x, self.lora_rows, None if self.bias is None else self.bias[self.first:])
        out[..., self.first:] = extra  # linear's backward needs its input and weight, not its output
        return out

    def merged(self) -> nn.Module:
        """The plain nn.Embedding or nn.Linear with the trained rows written into its weight."""
        with torch.no_grad():
            weight = torch.cat([self.weight[:self.first], self.lora_rows])
        if self.is_embedding:
            plain = nn.Embedding(*weight.shape, device=weight.device, dtype=weight.dtype)
        else:
            plain = nn.Linear(weight.shape[1], weight.shape[0], bias=self.bias is not None,
                              device=weight.device, dtype=weight.dtype)
            if self.bias is not None:
                plain.bias = self.bias
        plain.weight = nn.Parameter(weight)
        return plain


def add_trained_rows(model: nn.Module, first: int) -> None:
    """Let the token embedding's (and output layer's) rows from `first` on learn beside the adapters."""
    tied = model.lm_head.weight is model.token_embedding.weight
    model.token_embedding = TrainedRows(model.token_embedding, first)
    model.lm_head = TrainedRows(model.lm_head, first, model.token_embedding.lora_rows if tied else None)


def trained_rows_from(model: nn.Module) -> int | None:
    """The first id whose rows learn (add_trained_rows), None when the model has no such rows."""
    return model.token_embedding.first if isinstance(getattr(model, "token_embedding", None), TrainedRows) else None


def add_adapters(model: nn.Module, rank: int, alpha: float, rows_from: int | None = None,
                 targets: tuple[str, ...] = target_layers(DEFAULT_TARGETS)) -> list[str]:
    """Wrap every linear layer of `model` whose name ends in one of `targets` in a LoRALinear;
    returns the wrapped layers' names. `rows_from`: ids appended to the base's vocabulary (chat
    markers) learn their rows too."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    if rows_from is not None:
        add_trained_rows(model, rows_from)
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.endswith(tuple(targets)):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, rank, alpha))
            wrapped.append(name)
    return wrapped


def adapted_layer_kinds(model: nn.Module) -> str:
    """The kinds of layer that carry adapters, as "attn.qkv, ffwd.up, ...": what the start-up line shows."""
    kinds = {name.split(".", 2)[-1] for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    return ", ".join(sorted(kinds))


def freeze_all_but_adapters(model: nn.Module) -> None:
    """Only A and B learn. Done before DistributedDataParallel wraps the model: DDP registers a
    gradient hook for each parameter that requires a gradient, and waits for all of them."""
    for name, param in model.named_parameters():
        param.requires_grad = is_adapter(name)


def is_adapter(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ADAPTER_NAMES


def adapter_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA checkpoint saves: the adapters alone (kilobytes, where the base may be gigabytes)."""
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items() if is_adapter(name)}


def base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in model.state_dict().items() if not is_adapter(name)}


def merge_adapters(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear by the plain nn.Linear it computes; the model is an ordinary one again."""
    tied = isinstance(getattr(model, "lm_head", None), TrainedRows) and \
        model.lm_head.lora_rows is model.token_embedding.lora_rows
    for name, module in list(model.named_modules()):
        if isinstance(module, (LoRALinear, TrainedRows)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.merged())
    if tied:  # one table again, as the model was built
        model.lm_head.weight = model.token_embedding.weight
    for param in model.parameters():
        param.requires_grad = True
    return model


def fingerprint(weights: dict[str, torch.Tensor]) -> dict:
    """A cheap check that a base model is the one adapters were trained on: its tensors' names and
    sizes, and a weighted sum of all their values (different weights give a different sum)."""
    total, count = 0.0, 0
    for index, name in enumerate(sorted(weights)):
        tensor = weights[name].detach().double()
        total += (index + 1) * tensor.sum().item()
        count += tensor.numel()
    return {"tensors": len(weights), "numbers": count, "weighted_sum": total}


def same_fingerprint(a: dict, b: dict) -> bool:
    """Equal up to float rounding of the sum (the same weights on another device or dtype path)."""
    scale = max(1.0, abs(a["weighted_sum"]), abs(b["weighted_sum"]))
    return (a["tensors"], a["numbers"]) == (b["tensors"], b["numbers"]) and \
        abs(a["weighted_sum"] - b["weighted_sum"]) <= 1e-6 * scale
