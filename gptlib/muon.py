"""Muon for the hidden matrices, AdamW for everything else: one torch optimizer (--optimizer=muon).

Muon (Keller Jordan et al., 2024; the optimizer of the modded-nanogpt speed records) keeps SGD
momentum for each weight matrix and, instead of stepping along the momentum itself, steps along
the nearest semi-orthogonal matrix to it: U V^T for momentum = U S V^T. Every direction the
gradient cares about then moves by the same amount, so rare but useful directions are not drowned
out by the few largest ones. U V^T is approximated by a few Newton-Schulz iterations, matrix
products only, so it runs wherever a matmul does.

Muon is for the 2-D weights inside the blocks. The token table, the output layer, biases and
LayerNorm gains are not matrices of that kind (an embedding row is looked up, not multiplied), and
they train with AdamW as before. Both kinds live in one optimizer, so the training loop, gradient
scaling, checkpoints and resuming treat it like torch.optim.AdamW.

    python gpt_final_version.py --optimizer=muon --muon_lr=0.02
"""
from __future__ import annotations

import torch
from torch.optim.adamw import adamw

from gptlib import devices

# Coefficients of the quintic iteration x -> a x + b x^3 + c x^5, chosen (Jordan, 2024) to push
# every singular value in (0, 1] towards 1 within five steps; they land near 1 (about 0.7 to 1.2),
# not exactly on it, which is all the update needs.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """About U V^T for matrix = U S V^T: the same singular vectors, singular values near 1.
    `matrix` may be a stack (n, rows, cols) of matrices of one shape: each is done on its own, in
    one batched product per step. `dtype` is what the products compute in (bfloat16 is plenty:
    the answer is only near 1 anyway)."""
    a, b, c = NEWTON_SCHULZ
    norms = torch.linalg.matrix_norm(matrix, keepdim=True)  # Frobenius, per matrix
    x = (matrix / (norms + 1e-7)).to(dtype or matrix.dtype)  # singular values at most 1, where the iteration works
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: the (rows x rows) products are then the small ones
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(matrix.dtype)


def newton_schulz_dtype(device: str) -> torch.dtype:
    """bfloat16 where this device multiplies it in hardware, else float32. The iteration costs about
    a third of a small model's training step in float32 on a CPU; a CPU with AVX512-BF16 or AMX does
    it faster in bfloat16 (60 -> 36 ms here; README, "Quality per minute"), and so does a recent GPU."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float32
    if kind == "cpu" and devices.cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


class Muon(torch.optim.Optimizer):
    """Groups with muon=True step by orthogonalized Nesterov momentum; the others step by AdamW.

    A Muon update has every singular value near 1, whatever the gradient's size; it is scaled by
    sqrt(max(1, rows / cols)) so that tall and wide matrices change their outputs alike.
    """

    def __init__(self, groups, lr=2e-2, momentum=0.95, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0,
                 newton_schulz_dtype=torch.float32):
        defaults = dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=weight_decay, muon=False)
        super().__init__(groups, defaults)
        self.newton_schulz_dtype = newton_schulz_dtype  # chosen by the device (newton_schulz_dtype()), not saved

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                for shape in dict.fromkeys(p.shape for p in params):  # the 4 shapes of a block, in order
                    self._muon_step([p for p in params if p.shape == shape], group)
            elif params:
                self._adamw_step(params, group)
        return loss

    def _muon_step(self, params: list, group: dict) -> None:
        """One step for matrices of one shape (the same layer of every block): orthogonalized together."""
        momentum, directions = group["momentum"], []
        for p in params:
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffer = state["momentum_buffer"]
            buffer.mul_(momentum).add_(p.grad)
            directions.append(p.grad.add(buffer, alpha=momentum))  # Nesterov: look one momentum step ahead
        updates = orthogonalize(torch.stack(directions), dtype=self.newton_schulz_dtype)
        rows, cols = params[0].shape
        for p, update in zip(params, updates):
            p.mul_(1 - group["lr"] * group["weight_decay"])
            p.add_(update, alpha=-group["lr"] * max(1.0, rows / cols) ** 0.5)

    def _adamw_step(self, params: list, group: dict) -> None:
        """torch.optim.AdamW's own arithmetic (its functional form, every tensor at once)."""
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw(
            params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [], [s["step"] for s in states], foreach=True, amsgrad=False,
            beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
            maximize=False)


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """The weights Muon is for: 2-D and inside a block (not the token table or the output layer).
    LoRA's adapters are not: a (rank x n) factor has only `rank` directions to even out."""
    return p.dim() == 2 and name.startswith("blocks.") and "lora_" not in name
