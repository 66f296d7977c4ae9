"""LoRA (Hu et al. 2021): fine-tune a trained GPT by learning a small low-rank change to some weights.

    python gpt_final_version.py --init_from=models/shakespeare_char.pt --lora_rank=8 --data=mine.txt
    python model_handler.py models/NAME.pt --export=models/merged.pt     # adapters merged: a plain checkpoint

A chosen nn.Linear W (the attention's qkv and proj) becomes W x + (alpha / rank) * B (A x), with A
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
import torch.nn as nn
from torch.nn import functional as F

# The linear layers that get adapters, by the end of their names: the attention's, as in the paper.
TARGETS = ("attn.qkv", "attn.proj")
ADAPTER_NAMES = ("lora_A", "lora_B")


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


def add_adapters(model: nn.Module, rank: int, alpha: float) -> list[str]:
    """Wrap every target linear layer of `model` in a LoRALinear; returns the wrapped layers' names."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.endswith(TARGETS):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, rank, alpha))
            wrapped.append(name)
    return wrapped


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
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.merged())
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
