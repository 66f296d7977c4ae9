"""Weights, gradients and optimizer state shared out across processes: PyTorch's own FSDP (`fully_shard`).

    torchrun --standalone --nproc_per_node=2 gpt_final_version.py --fsdp=true --optimizer=adamw ...

Under DistributedDataParallel every process holds the whole model, its gradients and AdamW's two
moments: 16 bytes a parameter in float32. `--fsdp=true` gives each of N processes a 1/N slice of
each of them instead. Before a block runs, its full weights are gathered from every process and freed
after it (again for the backward pass), and its gradients are reduce-scattered so each process keeps
the averaged slice it updates. The maths is DDP's; the memory for the model's state falls by N, at the
cost of moving each block's weights over the wire three times a step.

Checkpoints stay plain: saving gathers the full weights and the optimizer's state onto rank 0, so a
sharded run's checkpoint resumes on one process (or under DDP) and the other way round.
"""
from __future__ import annotations

import sys
import warnings

import torch

# torch.distributed is imported when a run shards: it is absent from some builds, and slow to import.


def _options(on_rank_0_only: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    # whole tensors; gathered onto rank 0's CPU only, or read whole by every process (which keeps its slice)
    return StateDictOptions(full_state_dict=True, cpu_offload=on_rank_0_only)


def shard(model: torch.nn.Module) -> None:
    """Each block its own unit (gathered when it runs, freed after), the rest (embeddings, final norm,
    output layer, tied or not) one unit around them."""
    # our forward returns logits that are a view; nothing changes them in place, which is what FSDP warns of
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    from torch.distributed.fsdp import fully_shard
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)


def is_sharded(model: torch.nn.Module) -> bool:
    fsdp = sys.modules.get("torch.distributed.fsdp")  # imported by shard(): no run that shards, no FSDP module
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def plain_class(model: torch.nn.Module) -> type:
    """The model's own class (fully_shard swaps it for FSDPGPT, a subclass of FSDPModule and GPT)."""
    if not is_sharded(model):
        return type(model)
    fsdp_module = sys.modules["torch.distributed.fsdp"].FSDPModule
    return next(cls for cls in type(model).__mro__ if not issubclass(cls, fsdp_module))


def full_weights(model: torch.nn.Module) -> dict:
    """The whole model's weights on rank 0 (an empty dict elsewhere). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    return get_model_state_dict(model, options=_options(on_rank_0_only=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state keyed by parameter names, whole, on rank 0. Every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer, options=_options(on_rank_0_only=True))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """A checkpoint's optimizer state into a sharded (or plain) model's optimizer. The state of a run
    that was not sharded is keyed by position; it is renamed first, matched by the order in which the
    optimizer holds the parameters (the same in both: optimizers.configure_optimizer's groups)."""
    if any(isinstance(key, int) for key in saved["state"]) or \
            any(isinstance(p, int) for group in saved["param_groups"] for p in group["params"]):
        saved = _keyed_by_name(model, optimizer, saved)
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, saved, options=_options(on_rank_0_only=False))


def _keyed_by_name(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> dict:
    name_of = {id(param): name for name, param in model.named_parameters()}
    groups, state = [], {}
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        names = [name_of[id(param)] for param in group["params"]]
        for position, name in zip(saved_group["params"], names, strict=True):
            if position in saved["state"]:
                state[name] = saved["state"][position]
        groups.append({**saved_group, "params": names})
    return {"state": state, "param_groups": groups}
