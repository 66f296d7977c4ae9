"""The optimizer and its schedule: AdamW (or Muon for the blocks' matrices) and the learning rate at
each step; and AdamW's state re-keyed when a checkpoint changes attention class."""
from __future__ import annotations

import math

import torch

from config import TrainConfig
from gptlib import muon


def decay_groups(named_parameters) -> tuple[list[str], list[str]]:
    """Parameter names in the optimizer's two groups: those that get weight decay (matrices and
    embeddings) and those that do not (biases, LayerNorm gains)."""
    named = [(n, p) for n, p in named_parameters if p.requires_grad]
    return [n for n, p in named if p.dim() >= 2], [n for n, p in named if p.dim() < 2]


def configure_optimizer(model, cfg: TrainConfig, device: str):
    """AdamW; weight decay on matrices and embeddings only, never on biases or LayerNorm gains.
    With --optimizer=muon the blocks' matrices move to a third group that Muon steps (muon.py)."""
    params = dict(model.named_parameters())
    decayed, not_decayed = decay_groups(params.items())
    if cfg.optimizer == "muon":
        matrices = [n for n in decayed if muon.is_hidden_matrix(n, params[n])]
        decayed = [n for n in decayed if n not in matrices]
    groups = [
        {"params": [params[n] for n in decayed], "weight_decay": cfg.weight_decay},
        {"params": [params[n] for n in not_decayed], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "muon":  # last, so that group 0's rate stays the one the curve reports
        groups.append({"params": [params[n] for n in matrices], "weight_decay": cfg.muon_weight_decay, "muon": True,
                       "lr_scale": cfg.muon_lr / cfg.learning_rate})
        return muon.Muon(groups, lr=cfg.learning_rate, momentum=cfg.muon_momentum, betas=(cfg.beta1, cfg.beta2),
                         newton_schulz_dtype=muon.newton_schulz_dtype(device))
    fused = True if device.startswith("cuda") else None  # one kernel for all parameters on cuda
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


def convert_optimizer_state(saved: dict, old_groups, new_groups, convert) -> dict:
    """AdamW's state_dict for one parameter layout re-keyed for another (groups as decay_groups
    gives them). Its per-parameter moments have the parameters' shapes, so `convert`, which maps
    weights by name, maps them too."""
    old_names, new_names = [*old_groups[0], *old_groups[1]], [*new_groups[0], *new_groups[1]]
    by_name = {name: saved["state"][i] for i, name in enumerate(old_names) if i in saved["state"]}
    if not by_name:  # a fresh optimizer that never stepped
        return {"state": {}, "param_groups": _regrouped(saved, new_groups)}
    moments = {key: convert({n: s[key] for n, s in by_name.items()}) for key in ("exp_avg", "exp_avg_sq")}
    step = next(iter(by_name.values()))["step"]  # every parameter has taken the same steps
    state = {i: {"step": step.clone(), "exp_avg": moments["exp_avg"][n], "exp_avg_sq": moments["exp_avg_sq"][n]}
             for i, n in enumerate(new_names) if n in moments["exp_avg"]}
    return {"state": state, "param_groups": _regrouped(saved, new_groups)}


def _regrouped(saved: dict, new_groups) -> list[dict]:
    """The saved groups' settings (lr, betas, weight decay...) over the new layout's indices."""
    first = len(new_groups[0])
    return [dict(saved["param_groups"][0], params=list(range(first))),
            dict(saved["param_groups"][1], params=list(range(first, first + len(new_groups[1]))))]


def learning_rate_at(it: int, cfg: TrainConfig, time_fraction: float | None = None) -> float:
    """Linear warm-up to learning_rate, then cosine decay to min_lr at lr_decay_iters (or max_iters);
    with --schedule=wsd, the peak held until the last decay_fraction of the run, then a straight line
    down to min_lr. A run with a time budget (--max_minutes) counts the fraction of its time used."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if time_fraction is not None:
        progress = time_fraction
    else:
        decay_iters = cfg.lr_decay_iters or cfg.max_iters
        progress = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    if progress >= 1:
        return cfg.min_lr
    if cfg.schedule == "wsd":
        remaining = 1.0 - progress
        return cfg.min_lr + min(1.0, remaining / cfg.decay_fraction) * (cfg.learning_rate - cfg.min_lr)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)

